"""The OpenAI-compatible surface, driven by the official `openai` client against a live server.

One uvicorn process per module, on the test database, with committed orchestrators: a fast and a
slow offline one and a draft one in alpha, a ready one in bravo. The keepalive is lowered to 50 ms
in that process so a slow stream shows its `: ping` comments.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import openai
import pytest
from django.test import override_settings
from django.utils import timezone
from django_tenants.utils import schema_context
from openai import OpenAI

from cadence_site.testing import start_live_server, test_database_url
from orchestrators.tests.openai_server import FakeOpenAIServer
from tenants.keys import PREFIX_LENGTH

ROOT = Path(__file__).resolve().parents[2]
FAST, SLOW, DRAFT, BRAVO = "oai-fast", "oai-slow", "oai-draft", "oai-bravo"
UPSTREAM = "oai-upstream"  # an openai_compatible model: the fake OpenAI server, scripted per test
TOOLS = "oai-tools"  # offline, with the calculator tool
SLUGS = [FAST, SLOW, DRAFT, BRAVO, UPSTREAM, TOOLS]
CONFIGS = ("oai-offline", "oai-offline-slow", "oai-upstream")


def _cleanup() -> None:
    from chat.models import Conversation
    from orchestrators.models import LLMConfig, OrchestratorInstance

    for schema in ("org_alpha", "org_bravo"):
        with schema_context(schema):
            Conversation.objects.filter(orchestrator__slug__in=SLUGS).delete()
            OrchestratorInstance.objects.filter(slug__in=SLUGS).delete()
            LLMConfig.objects.filter(name__in=CONFIGS).delete()


def _create(schema: str, slug: str, config, *, build: bool = True, tools=()):
    from orchestrators.services import orchestrator_create
    from orchestrators.tasks import instance_build

    with schema_context(schema):
        created = orchestrator_create(
            slug=slug, name=slug.title(), llm_config=config, tools=list(tools)
        )
    if build:
        status = instance_build(
            schema_name=schema, instance_id=str(created.id), expected_hash=created.config_hash
        )
        assert status == "ready"
    return created


@pytest.fixture(scope="module")
def upstream():
    server = FakeOpenAIServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def live(module_world, django_db_blocker, upstream):

    from orchestrators.services import llm_config_create

    with django_db_blocker.unblock(), override_settings(CADENCE_EGRESS_ALLOWED_HOSTS=["127.0.0.1"]):
        _cleanup()
        with schema_context("org_alpha"):
            fast = llm_config_create(name=CONFIGS[0], provider="offline", model="cadence-offline")
            slow = llm_config_create(
                name=CONFIGS[1], provider="offline", model="cadence-offline@150ms"
            )
            remote = llm_config_create(
                name=CONFIGS[2],
                provider="openai_compatible",
                base_url=upstream.base_url,
                model="gpt-test",
                api_key="sk-test-upstream",
                max_retries=0,
                max_tokens=100,  # the cap a request's max_tokens cannot exceed
            )
        with schema_context("org_bravo"):
            bravo = llm_config_create(name=CONFIGS[0], provider="offline", model="cadence-offline")
        instances = {
            FAST: _create("org_alpha", FAST, fast),
            SLOW: _create("org_alpha", SLOW, slow),
            DRAFT: _create("org_alpha", DRAFT, fast, build=False),
            BRAVO: _create("org_bravo", BRAVO, bravo),
            UPSTREAM: _create("org_alpha", UPSTREAM, remote),
            TOOLS: _create("org_alpha", TOOLS, fast, tools=["calculator"]),
        }
        database_url = test_database_url()

    server = start_live_server(
        database_url, CADENCE_SSE_KEEPALIVE_SECONDS="0.05", CADENCE_EGRESS_ALLOWED_HOSTS="127.0.0.1"
    )
    try:
        yield SimpleNamespace(base=server.url, instances=instances)
    finally:
        server.stop()
        with django_db_blocker.unblock():
            _cleanup()


def _client(live, key: str) -> OpenAI:
    return OpenAI(base_url=f"{live.base}/v1", api_key=key, max_retries=0, timeout=20)


def _reply(text: str) -> str:
    return f"Offline model. You said: {text}"


def _run_for(completion_id: str):
    from engine.models import Run

    assert completion_id.startswith("chatcmpl-")
    with schema_context("org_alpha"):
        return Run.objects.get(pk=uuid.UUID(hex=completion_id.removeprefix("chatcmpl-")))


def _wait_for_run(completion_id: str, status: str, timeout: float = 10.0):
    """The run once it has `status`; the row itself is written as the turn starts, a moment after
    the stream's first chunk."""
    from engine.models import Run

    deadline = time.monotonic() + timeout
    while True:
        try:
            run = _run_for(completion_id)
        except Run.DoesNotExist:
            run = None
        if (run is not None and run.status == status) or time.monotonic() > deadline:
            assert run is not None
            return run
        time.sleep(0.05)


# --- models ---------------------------------------------------------------------------------


def test_models_lists_only_the_keys_organizations_ready_orchestrators(live, world, committed_db):
    from orchestrators.models import OrchestratorInstance

    with schema_context("org_alpha"):
        ready = set(
            OrchestratorInstance.objects.filter(status="ready").values_list("slug", flat=True)
        )

    alpha = {m.id: m for m in _client(live, world.alpha.keys["viewer"]).models.list()}
    bravo = {m.id for m in _client(live, world.bravo.keys["member"]).models.list()}

    assert set(alpha) == ready
    assert {FAST, SLOW} <= set(alpha)
    assert DRAFT not in alpha and BRAVO not in alpha
    assert alpha[FAST].object == "model" and alpha[FAST].owned_by == "alpha"
    assert FAST not in bravo and SLOW not in bravo
    assert BRAVO in bravo


def test_model_retrieve_and_its_404(live, world):
    client = _client(live, world.alpha.keys["member"])

    assert client.models.retrieve(FAST).id == FAST
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve(BRAVO)
    assert info.value.code == "model_not_found"


# --- completions ----------------------------------------------------------------------------


def test_non_streamed_completion_is_recorded_as_an_openai_run(live, world, committed_db):
    completion = _client(live, world.alpha.keys["member"]).chat.completions.create(
        model=FAST,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": "earlier answer"},
            {"role": "user", "content": [{"type": "text", "text": "hello there"}]},
        ],
        temperature=0.2,
        max_tokens=50,
        user="someone",
    )

    assert completion.object == "chat.completion"
    assert completion.model == FAST
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == _reply("hello there")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == len(_reply("hello there").split())
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    run = _wait_for_run(completion.id, "succeeded")
    assert (run.trigger, run.status) == ("openai", "succeeded")
    assert run.orchestrator_id == live.instances[FAST].id
    assert run.output == _reply("hello there")
    assert run.principal == f"key:{world.alpha.keys['member'][:PREFIX_LENGTH]}"
    # The request's sampling parameters reach the model and are recorded with the run.
    assert run.input == {
        "message": "hello there",
        "history_messages": 3,
        "parameters": {"max_tokens": 50, "temperature": 0.2},
    }
    assert run.usage == completion.usage.model_dump(
        include={"prompt_tokens", "completion_tokens", "total_tokens"}
    )


def test_streamed_completion_concatenates_to_the_reply_with_a_usage_chunk(live, world):
    stream = _client(live, world.alpha.keys["member"]).chat.completions.create(
        model=FAST,
        messages=[{"role": "user", "content": "stream me a few words please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == _reply("stream me a few words please")
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == len(text.split())
    assert all(c.usage is None for c in chunks[:-1])


def test_a_runs_end_reaches_the_organizations_feed_after_its_reply(live, world, committed_db):
    """The server's turns do not wait for their feed frames to reach Redis (engine/runs/live.py,
    `serve_lasting`): the run's start and end still reach the organization's feed, a moment
    after the reply."""
    import redis
    from django.conf import settings

    from engine.runs.live import org_runs_stream_key

    client = redis.Redis.from_url(settings.REDIS_URL)
    key = org_runs_stream_key("org_alpha")
    last = client.xrevrange(key, count=1)
    start = last[0][0].decode() if last else "0-0"
    completion = _client(live, world.alpha.keys["member"]).chat.completions.create(
        model=FAST, messages=[{"role": "user", "content": "to the feed"}]
    )
    run_id = str(_run_for(completion.id).id)

    deadline = time.monotonic() + 10
    statuses: list[str] = []
    while "succeeded" not in statuses and time.monotonic() < deadline:
        time.sleep(0.02)
        statuses = [
            frame["status"]
            for _, fields in client.xrange(key, min=f"({start}")
            for frame in map(json.loads, fields[b"e"].decode().split("\n"))
            if frame["id"] == run_id
        ]
    assert statuses == ["running", "succeeded"]


def test_stream_without_include_usage_has_no_usage_chunk(live, world):
    chunks = list(
        _client(live, world.alpha.keys["member"]).chat.completions.create(
            model=FAST, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )

    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == _reply("hi")


def test_slow_stream_sends_ping_comments_and_no_custom_events(live, world):
    body = {
        "model": SLOW,
        "messages": [{"role": "user", "content": "one two three"}],
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {world.alpha.keys['member']}"}

    response = httpx.post(
        f"{live.base}/v1/chat/completions", json=body, headers=headers, timeout=20
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    lines = [line for line in response.text.split("\n") if line]
    assert ": ping" in lines
    assert not [line for line in lines if line.startswith("event:")]
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    text = "".join((json.loads(d)["choices"][0]["delta"].get("content") or "") for d in data[:-1])
    assert text == _reply("one two three")


def test_client_leaving_mid_stream_still_records_the_run(live, world, committed_db):
    body = {
        "model": SLOW,
        "messages": [{"role": "user", "content": "a b c d e f g h"}],
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {world.alpha.keys['member']}"}
    completion_id = None
    with httpx.Client(timeout=20) as http:
        with http.stream(
            "POST", f"{live.base}/v1/chat/completions", json=body, headers=headers
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    completion_id = json.loads(line.removeprefix("data: "))["id"]
                    break
        # Leaving the block closes the connection after the first chunk.
    left_at = timezone.now()
    assert completion_id is not None

    run = _wait_for_run(completion_id, "succeeded")
    assert run.status == "succeeded"
    assert run.output == _reply("a b c d e f g h")
    assert run.finished_at > left_at  # it went on after the client had gone


def test_conversation_extension_stores_the_exchange(live, world, committed_db):
    from chat.models import Conversation, Message

    with schema_context("org_alpha"):
        conversation = Conversation.objects.create(
            orchestrator_id=live.instances[FAST].id,
            owner_api_key_id=world.alpha.key_ids["member"],
        )

    completion = _client(live, world.alpha.keys["member"]).chat.completions.create(
        model=FAST,
        messages=[{"role": "user", "content": "remember this"}],
        extra_body={"cadence": {"conversation_id": str(conversation.id)}},
    )

    run = _wait_for_run(completion.id, "succeeded")
    with schema_context("org_alpha"):
        messages = list(Message.objects.filter(conversation=conversation).order_by("seq"))
        last_seq = Conversation.objects.get(pk=conversation.pk).last_seq
    assert [(m.seq, m.role, m.status) for m in messages] == [
        (1, "user", "complete"),
        (2, "assistant", "complete"),
    ]
    assert messages[0].content == "remember this"
    assert messages[1].content == _reply("remember this")
    assert messages[1].run_id == run.id
    assert messages[1].usage == run.usage
    assert last_seq == 2
    assert run.conversation_id == conversation.id
    assert str(run.owner_api_key_id) == world.alpha.key_ids["member"]
    assert completion.model_extra["cadence"]["assistant_message_id"] == str(messages[1].id)


def test_conversation_extension_stores_the_replys_tool_calls(live, world, committed_db):
    from chat.models import Conversation, Message

    with schema_context("org_alpha"):
        conversation = Conversation.objects.create(
            orchestrator_id=live.instances[TOOLS].id,
            owner_api_key_id=world.alpha.key_ids["member"],
        )

    completion = _client(live, world.alpha.keys["member"]).chat.completions.create(
        model=TOOLS,
        messages=[{"role": "user", "content": '/tool calculator {"expression": "2+3"}'}],
        extra_body={"cadence": {"conversation_id": str(conversation.id)}},
    )

    run = _wait_for_run(completion.id, "succeeded")
    with schema_context("org_alpha"):
        reply = Message.objects.get(conversation=conversation, role="assistant")
        recorded = run.events.get(kind="tool_call")
    assert [(c["name"], c["arguments"]) for c in reply.tool_calls] == [
        ("calculator", {"expression": "2+3"})
    ]
    assert reply.tool_calls[0]["result"] == recorded.data["outputs"]["result"]
    assert reply.content == completion.choices[0].message.content


def test_conversation_extension_refuses_others_conversations(live, world, committed_db):
    from chat.models import Conversation, Message

    with schema_context("org_alpha"):
        other_key = Conversation.objects.create(
            orchestrator_id=live.instances[FAST].id, owner_api_key_id=world.alpha.key_ids["owner"]
        )
        other_model = Conversation.objects.create(
            orchestrator_id=live.instances[SLOW].id,
            owner_api_key_id=world.alpha.key_ids["member"],
        )
    client = _client(live, world.alpha.keys["member"])

    for conversation_id in (str(other_key.id), str(other_model.id), str(uuid.uuid4())):
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(
                model=FAST,
                messages=[{"role": "user", "content": "x"}],
                extra_body={"cadence": {"conversation_id": conversation_id}},
            )
        assert info.value.code == "conversation_not_found"
    with schema_context("org_alpha"):
        assert Message.objects.filter(conversation__in=[other_key, other_model]).count() == 0


# --- errors ---------------------------------------------------------------------------------


def test_model_error_mid_stream_is_a_final_error_payload_the_client_raises(
    live, world, upstream, committed_db
):
    upstream.reset()
    upstream.reply("one two three four", error_after=2)
    stream = _client(live, world.alpha.keys["member"]).chat.completions.create(
        model=UPSTREAM, messages=[{"role": "user", "content": "go"}], stream=True
    )
    seen: list[str] = []
    completion_id = None

    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            completion_id = chunk.id
            seen.append(chunk.choices[0].delta.content or "")

    assert "".join(seen) == "one two "
    assert info.value.body["code"] == "llm_error"
    assert info.value.body["type"] == "api_error"
    run = _wait_for_run(completion_id, "failed")
    assert run.status == "failed"
    assert run.error.startswith("llm_error: ")


def test_model_error_before_any_output_maps_to_502(live, world, upstream, committed_db):
    upstream.reset()
    upstream.error(500, message="boom")

    with pytest.raises(openai.APIStatusError) as info:
        _client(live, world.alpha.keys["member"]).chat.completions.create(
            model=UPSTREAM, messages=[{"role": "user", "content": "go"}]
        )

    assert info.value.status_code == 502
    assert info.value.body["type"] == "api_error"
    assert info.value.body["code"] == "llm_unavailable"


def test_bad_key_is_401(live, world):
    for key in ("ck_not-a-real-key-at-all-000000000000", "nonsense"):
        with pytest.raises(openai.AuthenticationError) as info:
            _client(live, key).models.list()
        assert info.value.status_code == 401
        assert info.value.code == "invalid_api_key"
        assert info.value.body["type"] == "invalid_request_error"


def test_missing_key_is_401(live):
    response = httpx.get(f"{live.base}/v1/models", timeout=10)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_unknown_foreign_and_unready_models_are_404(live, world):
    client = _client(live, world.alpha.keys["member"])
    messages = [{"role": "user", "content": "hi"}]

    for model, says in (
        (("nope-nope"), "does not exist"),
        (BRAVO, "does not exist"),
        (DRAFT, "draft"),
    ):
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model=model, messages=messages)
        assert info.value.code == "model_not_found"
        assert info.value.body["param"] == "model"
        assert says in info.value.message


def test_viewer_key_cannot_chat(live, world):
    with pytest.raises(openai.PermissionDeniedError) as info:
        _client(live, world.alpha.keys["viewer"]).chat.completions.create(
            model=FAST, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.code == "insufficient_role"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": FAST, "messages": []}, "messages"),
        ({"model": FAST}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": FAST, "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": FAST, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"model": FAST, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0]",
        ),
        ({"model": FAST, "messages": [{"role": "assistant", "content": "x"}]}, "messages[0].role"),
        (
            {"model": FAST, "messages": [{"role": "user", "content": "x" * 32_001}]},
            "messages[0].content",
        ),
        ({"model": FAST, "messages": [{"role": "user", "content": "x"}] * 201}, "messages"),
        ({"model": FAST, "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        (
            {"model": FAST, "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            "stream",
        ),
        (
            {
                "model": FAST,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "not a name"}}],
            },
            "tools[0].function.name",
        ),
        (
            {
                "model": FAST,
                "messages": [{"role": "user", "content": "x"}],
                "cadence": {"conversation_id": "1"},
            },
            "cadence.conversation_id",
        ),
    ],
)
def test_invalid_requests_are_400_naming_the_parameter(live, world, body, param):
    headers = {"Authorization": f"Bearer {world.alpha.keys['member']}"}

    response = httpx.post(
        f"{live.base}/v1/chat/completions", json=body, headers=headers, timeout=10
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert error["message"]


def test_malformed_json_is_400(live, world):
    headers = {
        "Authorization": f"Bearer {world.alpha.keys['member']}",
        "Content-Type": "application/json",
    }

    response = httpx.post(
        f"{live.base}/v1/chat/completions", content=b"{not json", headers=headers, timeout=10
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_body_over_the_limit_is_413_declared_or_chunked(live, world):
    from django.conf import settings

    headers = {
        "Authorization": f"Bearer {world.alpha.keys['member']}",
        "Content-Type": "application/json",
    }
    body = json.dumps(
        {
            "model": FAST,
            "messages": [{"role": "user", "content": "x" * 30_000}] * 40,
        }
    ).encode()
    assert len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    declared = httpx.post(
        f"{live.base}/v1/chat/completions", content=body, headers=headers, timeout=10
    )
    chunked = httpx.post(
        f"{live.base}/v1/chat/completions",
        content=(body[i : i + 65536] for i in range(0, len(body), 65536)),
        headers=headers,
        timeout=10,
    )

    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "payload_too_large"
    assert chunked.status_code == 413
    assert chunked.json()["error"] == {
        "message": f"The request body exceeds the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
        "type": "invalid_request_error",
        "param": None,
        "code": "payload_too_large",
    }


def test_openai_client_raises_bad_request_for_an_invalid_body(live, world):
    with pytest.raises(openai.BadRequestError) as info:
        _client(live, world.alpha.keys["member"]).chat.completions.create(
            model=FAST, messages=[{"role": "user", "content": "x"}], n=3
        )
    assert info.value.body["param"] == "n"


def test_suspended_organization_is_403(live, world, committed_db):
    from tenants.models import Organization

    Organization.objects.filter(slug="bravo").update(status="suspended")
    try:
        with pytest.raises(openai.PermissionDeniedError) as info:
            _client(live, world.bravo.keys["member"]).models.list()
        assert info.value.code == "org_suspended"
    finally:
        Organization.objects.filter(slug="bravo").update(status="active")


def test_plan_limit_is_429_with_retry_after(live, world, committed_db):
    from tenants import ratelimit
    from tenants.limits.enforce import ORG_PRINCIPAL
    from tenants.models import Organization, Plan

    org = Organization.objects.get(slug="alpha")
    bucket = ratelimit.bucket_key(str(org.public_id), ORG_PRINCIPAL, "requests")
    previous_plan = org.plan_id
    plan, _ = Plan.objects.update_or_create(
        slug="oai-tiny", defaults={"name": "Tiny", "requests_per_minute": 2}
    )
    Organization.objects.filter(pk=org.pk).update(plan=plan)
    ratelimit.clear(bucket)
    client = _client(live, world.alpha.keys["member"])
    try:
        client.models.list()
        client.models.list()
        with pytest.raises(openai.RateLimitError) as info:
            client.models.list()
        error = info.value
        assert error.status_code == 429
        assert error.code == "rate_limit_exceeded"
        # GCRA: two per minute is one every 30 s, and the third came at once.
        assert 29 <= int(error.response.headers["retry-after"]) <= 30
        assert error.response.headers["x-ratelimit-limit"] == "2"
        assert error.response.headers["x-ratelimit-remaining"] == "0"
        assert 59 <= int(error.response.headers["x-ratelimit-reset"]) <= 60
        # Bravo has its own bucket.
        assert _client(live, world.bravo.keys["member"]).models.list().data is not None
    finally:
        Organization.objects.filter(pk=org.pk).update(plan_id=previous_plan)
        ratelimit.clear(bucket)
        Plan.objects.filter(slug="oai-tiny").delete()
