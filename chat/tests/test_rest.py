from __future__ import annotations

import json

from asgiref.sync import async_to_sync
from django_tenants.utils import schema_context

from chat.models import Conversation, Message
from engine.models import Run

BASE = "/api/v1/orgs/alpha/conversations"


async def _collect(stream) -> bytes:
    return b"".join([chunk async for chunk in stream])


def _conversation(client, orchestrator="chatbot") -> str:
    response = client.post(f"{BASE}/", {"orchestrator": orchestrator, "title": "t"}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def test_a_message_gets_a_stored_reply_and_a_recorded_run(world, chat_orchestrator, as_key):
    client = as_key(world.alpha.keys["member"])
    conversation = _conversation(client)

    response = client.post(f"{BASE}/{conversation}/messages/", {"content": "hello"}, format="json")

    assert response.status_code == 201, response.json()
    reply = response.json()["reply"]
    assert (reply["status"], reply["content"]) == ("complete", "Offline model. You said: hello")
    assert reply["usage"]["total_tokens"] > 0
    listed = client.get(f"{BASE}/{conversation}/messages/").json()["results"]
    assert [(m["seq"], m["role"], m["status"]) for m in listed] == [
        (1, "user", "complete"),
        (2, "assistant", "complete"),
    ]
    with schema_context("org_alpha"):
        run = Run.objects.get(pk=reply["run"])
        assert (run.status, run.trigger, run.conversation_id.hex) == (
            "succeeded",
            "rest",
            conversation.replace("-", ""),
        )
        assert [e.name for e in run.events.filter(kind="note", outcome="completed")][:3] == [
            "prepare_prompt",
            "agent",
            "finalize",
        ]
        prepared = run.events.get(kind="note", name="prepare_prompt", outcome="completed")
        assert prepared.data["outputs"]["messages"][-1] == {"role": "user", "content": "hello"}
        assert prepared.duration_ms is not None


def test_tool_calls_are_stored_with_the_reply(world, chat_orchestrator, as_key):
    client = as_key(world.alpha.keys["member"])
    conversation = _conversation(client)

    reply = client.post(
        f"{BASE}/{conversation}/messages/",
        {"content": '/tool calculator {"expression": "2+3"}'},
        format="json",
    ).json()["reply"]

    assert reply["tool_calls"][0]["name"] == "calculator"
    assert "5" in reply["content"]


def test_sse_streams_events_then_done(world, chat_orchestrator, as_key):
    client = as_key(world.alpha.keys["member"])
    conversation = _conversation(client)

    response = client.post(
        f"{BASE}/{conversation}/messages/",
        {"content": "stream me"},
        format="json",
        HTTP_ACCEPT="text/event-stream",
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    body = async_to_sync(_collect)(response.streaming_content).decode()
    events = [
        (block.split("\n")[0][7:], json.loads(block.split("\n")[1][6:]))
        for block in body.strip().split("\n\n")
        if block.startswith("event:")
    ]
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "message.created" and kinds[-1] == "done"
    assert (
        "".join(data["delta"] for kind, data in events if kind == "token")
        == "Offline model. You said: stream me"
    )
    assert "step" in kinds
    assert events[-1][1]["status"] == "complete"


def test_reconnecting_client_fetches_what_it_missed(world, chat_orchestrator, as_key):
    client = as_key(world.alpha.keys["member"])
    conversation = _conversation(client)
    for text in ("one", "two"):
        client.post(f"{BASE}/{conversation}/messages/", {"content": text}, format="json")

    missed = client.get(f"{BASE}/{conversation}/messages/?after=2").json()

    assert [(m["seq"], m["content"]) for m in missed["results"]] == [
        (3, "two"),
        (4, "Offline model. You said: two"),
    ]
    assert missed["next_after"] is None
    paged = client.get(f"{BASE}/{conversation}/messages/?limit=3").json()
    assert (len(paged["results"]), paged["next_after"]) == (3, 3)


def test_history_sent_to_the_model_is_the_latest_that_fits(world, chat_orchestrator, settings):
    from chat import services

    settings.CADENCE_CHAT_HISTORY_TOKENS = 30
    with schema_context("org_alpha"):
        conversation = Conversation.objects.create(
            orchestrator=chat_orchestrator["fast"], owner_user_id=world.alpha.users["member"].pk
        )
        for i in range(10):
            services.message_append(
                conversation_id=conversation.id,
                role="user" if i % 2 == 0 else "assistant",
                content=f"message number {i} " + "x" * 20,
            )
        history = services.history_for_model(conversation_id=conversation.id, before_seq=11)

    assert [h["content"].split(" ")[2] for h in history] == ["7", "8", "9"]


def test_history_reads_past_many_pages_and_skips_what_a_model_must_not_see(
    world, chat_orchestrator, settings
):
    """Pages of 50, 100, 200...: a long conversation is read whole when it fits; failed,
    empty, tool and system messages are never part of it. Appended two at a time (one INSERT
    of several rows: cadence_site/rows.rows_insert) with the ORM's defaults kept."""
    from chat import services

    settings.CADENCE_CHAT_HISTORY_TOKENS = 100_000
    with schema_context("org_alpha"):
        conversation = Conversation.objects.create(
            orchestrator=chat_orchestrator["fast"], owner_user_id=world.alpha.users["member"].pk
        )
        for i in range(0, 400, 2):
            first, second = services.messages_append(
                conversation_id=conversation.id,
                messages=[
                    {"role": "user", "content": f"u{i}"},
                    {"role": "assistant", "content": f"a{i + 1}", "owner": "proc"},
                ],
            )
            assert (first.seq, second.seq) == (i + 1, i + 2)
        stored = Message.objects.get(conversation_id=conversation.id, seq=2)
        assert stored.created_at is not None and stored.heartbeat_at is not None
        assert (stored.usage, stored.tool_calls, stored.status) == ({}, [], "complete")
        Message.objects.filter(conversation_id=conversation.id, seq=5).update(status="failed")
        Message.objects.filter(conversation_id=conversation.id, seq=7).update(content="")
        Message.objects.filter(conversation_id=conversation.id, seq=9).update(role="tool")
        Message.objects.filter(conversation_id=conversation.id, seq=11).update(role="system")

        history = services.history_for_model(conversation_id=conversation.id, before_seq=401)
        assert services.history_for_model(conversation_id=conversation.id, before_seq=3) == [
            {"role": "user", "content": "u0"},
            {"role": "assistant", "content": "a1"},
        ]

    expected = [
        f"u{i}" if i % 2 == 0 else f"a{i}" for i in range(400) if i + 1 not in (5, 7, 9, 11)
    ]
    assert [h["content"] for h in history] == expected
    assert history[0]["role"] == "user" and history[1]["role"] == "assistant"


def test_empty_oversized_and_unknown_input_get_clear_errors(world, chat_orchestrator, as_key):
    client = as_key(world.alpha.keys["member"])
    conversation = _conversation(client)

    empty = client.post(f"{BASE}/{conversation}/messages/", {"content": "  "}, format="json")
    huge = client.post(f"{BASE}/{conversation}/messages/", {"content": "x" * 40_000}, format="json")
    unknown = client.post(f"{BASE}/", {"orchestrator": "nope"}, format="json")

    assert (empty.status_code, empty.json()["error"]["code"]) == (400, "invalid_message")
    assert huge.status_code in (400, 413)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (400, "unknown_orchestrator")
    with schema_context("org_alpha"):
        assert Message.objects.filter(conversation_id=conversation).count() == 0


def test_suspended_orchestrator_is_refused(world, chat_orchestrator, as_key):
    from orchestrators.services import orchestrator_activate, orchestrator_suspend
    from orchestrators.tasks import instance_build

    client = as_key(world.alpha.keys["member"])
    conversation = _conversation(client)
    instance = chat_orchestrator["fast"]
    with schema_context("org_alpha"):
        orchestrator_suspend(instance=instance)
    try:
        response = client.post(f"{BASE}/{conversation}/messages/", {"content": "hi"}, format="json")
    finally:
        with schema_context("org_alpha"):
            instance = orchestrator_activate(instance=instance)
        instance_build(
            schema_name="org_alpha",
            instance_id=str(instance.id),
            expected_hash=instance.config_hash,
        )

    assert (response.status_code, response.json()["error"]["code"]) == (
        409,
        "orchestrator_suspended",
    )


def test_conversations_are_private_to_their_owner_and_organization(
    world, chat_orchestrator, as_key, api
):
    conversation = _conversation(as_key(world.alpha.keys["member"]))
    url = f"{BASE}/{conversation}/"

    api.credentials(
        HTTP_AUTHORIZATION=f"Bearer {world.alpha.keys['admin']}"
    )  # same org, not the owner
    assert api.get(url).status_code == 404
    assert api.post(f"{url}messages/", {"content": "hi"}, format="json").status_code == 404
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {world.bravo.keys['owner']}")
    assert api.get(url).status_code == 404
    assert api.get(f"/api/v1/orgs/bravo/conversations/{conversation}/").status_code == 404
    api.credentials()
    api.force_login(world.outsider)
    assert api.get(url).status_code == 404
    api.force_login(world.alpha.users["viewer"])
    assert api.post(f"{BASE}/", {"orchestrator": "chatbot"}, format="json").status_code == 403
    with schema_context("org_alpha"):
        assert Message.objects.filter(conversation_id=conversation).count() == 0


def test_a_failed_model_call_is_stored_as_failed(
    world, chat_orchestrator, as_key, openai_server, settings
):
    from orchestrators.models import LLMConfig, OrchestratorInstance
    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build

    with schema_context("org_alpha"):
        OrchestratorInstance.objects.filter(slug="flaky").delete()
        LLMConfig.objects.filter(name="flaky").delete()
        config = llm_config_create(
            name="flaky",
            provider="openai_compatible",
            base_url=openai_server.base_url,
            model="m",
            api_key="sk-x",
            max_retries=0,
        )
        instance = orchestrator_create(slug="flaky", name="Flaky", llm_config=config)
    instance_build(
        schema_name="org_alpha", instance_id=str(instance.id), expected_hash=instance.config_hash
    )
    client = as_key(world.alpha.keys["member"])
    conversation = _conversation(client, "flaky")
    openai_server.error(500, message="boom")
    try:
        response = client.post(f"{BASE}/{conversation}/messages/", {"content": "hi"}, format="json")
    finally:
        with schema_context("org_alpha"):
            Conversation.objects.filter(orchestrator=instance).delete()
            instance.delete()
            config.delete()

    assert response.status_code == 502
    reply = response.json()["reply"]
    assert reply["status"] == "failed"
    assert reply["error"].startswith("llm_unavailable")
