"""A bounded fuzz over every API endpoint, /v1 and every frame type: no input is a 5xx.

Hypothesis draws an endpoint, a method, query parameters and a JSON body (or a raw body) made of
the fields the API knows and of hostile values: NUL, lone surrogates, deep nesting, huge numbers,
NaN, wrong types. REST runs in a rolled-back transaction as the organization's owner (the deepest
code paths); /v1 and the sockets run on the ASGI application itself.
"""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadence_site.testing import ws_connect

FIELDS = [
    "name", "slug", "role", "email", "username", "owner_email", "plan", "expires_at",
    "member_id", "provider", "model", "base_url", "api_key", "max_retries", "temperature",
    "max_tokens", "timeout_seconds", "framework", "flow", "tools", "plugins", "llm_config",
    "system_prompt", "description", "tier", "max_steps", "orchestrator", "title", "content",
    "stream", "messages", "metadata", "input", "limit", "after", "type", "cadence",
    "issuer", "client_id", "client_secret", "allowed_domains", "claim", "mapping",
    "default_role", "sso_required", "scopes",
]  # fmt: skip
HOSTILE = ["\x00", "\ud800", "a\udfffb", "%00", "../../etc", "9" * 400, "ck_" + "x" * 43, ""]
text = st.one_of(st.text(max_size=16), st.sampled_from(HOSTILE))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=10,
)
objects = st.dictionaries(st.one_of(st.sampled_from(FIELDS), text), values, max_size=6)
DEEP = "[" * 3000 + "]" * 3000
raw_bodies = st.sampled_from([DEEP, '{"name": "\\u0000"}', "{oops", "", "null", "[]", '"x"'])


def _body(value) -> str:
    return value if isinstance(value, str) and value in (DEEP, "{oops", "") else json.dumps(value)


bodies = st.one_of(objects.map(_body), values.map(_body), raw_bodies)
queries = st.dictionaries(
    st.sampled_from(["limit", "after", "before", "q", "status", "stream"]), text, max_size=2
)


def _api_endpoints() -> list[str]:
    from django.urls import URLResolver, get_resolver

    def walk(patterns, prefix=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns, prefix + str(p.pattern))
            else:
                yield prefix + str(p.pattern)

    return sorted(
        "/" + path for path in walk(get_resolver().url_patterns) if path.startswith("api/v1/")
    )


def _fill(pattern: str, draw_text: str) -> str:
    def value(match: re.Match) -> str:
        kind, name = match.group(1), match.group(2)
        if name == "org_slug":
            return "alpha"
        if kind == "uuid":
            return str(uuid.uuid4())
        return re.sub(r"[^A-Za-z0-9._-]", "", draw_text) or "x"

    return re.sub(r"<(?:(\w+):)?(\w+)>", value, pattern)


ENDPOINTS = _api_endpoints()


def test_the_fuzz_covers_every_api_endpoint():
    assert len(ENDPOINTS) >= 25
    assert "/api/v1/orgs/<slug:org_slug>/api-keys/<uuid:key_id>/reassign/" in ENDPOINTS


@pytest.mark.django_db
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    method=st.sampled_from(["GET", "POST", "PATCH", "PUT", "DELETE"]),
    segment=text,
    query=queries,
    body=bodies,
)
def test_no_api_input_is_a_server_error(world, endpoint, method, segment, query, body):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(world.alpha.users["owner"])
    path = _fill(endpoint, segment)

    response = client.generic(
        method, path, body, content_type="application/json", QUERY_STRING=_query(query)
    )

    assert response.status_code < 500, (method, path, query, body[:200], response.content[:300])
    if response.status_code >= 400 and response.get("Content-Type", "").startswith(
        "application/json"
    ):
        assert set(response.json()["error"]) >= {"code", "message"}


def _query(query: dict) -> str:
    from urllib.parse import urlencode

    return urlencode(
        {k: v.encode("utf-8", "surrogatepass") for k, v in query.items()}, encoding="utf-8"
    )


async def _post_v1(path: str, key: str, body: str, method: str = "POST") -> httpx.Response:
    from cadence_site.asgi import application

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://127.0.0.1"
    ) as client:
        return await client.request(
            method,
            path,
            content=body.encode("utf-8", "surrogatepass"),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )


@pytest.mark.asyncio
async def test_no_openai_input_is_a_server_error(world, committed_db):
    examples: list[str] = []

    @settings(max_examples=50, database=None)
    @given(st.one_of(bodies, objects.map(lambda o: json.dumps({"messages": [o], "model": "x"}))))
    def collect(body):
        examples.append(body)

    collect()
    for body in examples:
        response = await _post_v1("/v1/chat/completions", world.alpha.keys["member"], body)
        assert response.status_code < 500, (body[:200], response.text[:300])
        if response.status_code >= 400:
            assert set(response.json()["error"]) >= {"message", "type", "code"}
    from urllib.parse import quote

    for model in ["\x00", "%00", "x" * 500, "..", "\ud800"]:
        path = "/v1/models/" + quote(model.encode("utf-8", "surrogatepass"))
        response = await _post_v1(path, world.alpha.keys["member"], "", "GET")
        assert response.status_code < 500


FRAME_TYPES = ["message", "cancel", "audit.list", None, 1, "x" * 300]


def _frames() -> list[str]:
    frames: list[str] = []
    frame_objects = st.builds(
        lambda kind, extra: {"type": kind, **extra},
        st.sampled_from(FRAME_TYPES),
        st.dictionaries(st.sampled_from(["content", "limit", "after", "x"]), values, max_size=3),
    ).filter(lambda f: not (f["type"] == "message" and isinstance(f.get("content"), str)))

    @settings(max_examples=40, database=None)
    @given(st.one_of(frame_objects.map(json.dumps), bodies))
    def collect(frame):
        if frame:  # an empty text frame cannot be sent by the test client
            frames.append(frame)

    collect()
    return frames


async def _open_socket(path: str, user) -> WebsocketCommunicator:
    from cadence_site.asgi import application
    from tenants import tickets
    from tenants.resolution import org_by_slug

    org = await database_sync_to_async(org_by_slug)("alpha")
    ticket = await database_sync_to_async(tickets.ticket_issue)(org=org, user=user)
    socket = WebsocketCommunicator(
        application, f"{path}?ticket={ticket}", headers=[(b"host", b"127.0.0.1")]
    )
    assert (await ws_connect(socket))[0]
    return socket


@pytest.mark.asyncio
async def test_no_frame_breaks_the_audit_socket(world, committed_db):
    socket = await _open_socket("/ws/orgs/alpha/audit/", world.alpha.users["admin"])
    for frame in _frames():
        await socket.send_to(text_data=frame)
        answer = await socket.receive_json_from(timeout=5)
        while answer["type"] == "audit.event":  # live: the organization's activity, not an answer
            answer = await socket.receive_json_from(timeout=5)
        assert answer["type"] in ("error", "audit.events"), (frame[:200], answer)
    await socket.disconnect()


def _conversation(orchestrator, user) -> str:
    from django_tenants.utils import schema_context

    from chat.models import Conversation

    with schema_context("org_alpha"):
        return str(Conversation.objects.create(orchestrator=orchestrator, owner_user_id=user.pk).id)


@pytest.fixture
def fuzz_orchestrator(world, committed_db):
    from django_tenants.utils import schema_context

    from orchestrators.models import LLMConfig, OrchestratorInstance
    from orchestrators.services import llm_config_create, orchestrator_create

    def cleanup():
        with schema_context("org_alpha"):
            OrchestratorInstance.objects.filter(slug="fuzzbot").delete()
            LLMConfig.objects.filter(name="fuzz-offline").delete()

    cleanup()
    with schema_context("org_alpha"):
        config = llm_config_create(name="fuzz-offline", provider="offline", model="cadence-offline")
        instance = orchestrator_create(slug="fuzzbot", name="Fuzzbot", llm_config=config)
    yield instance
    cleanup()


@pytest.mark.asyncio
async def test_no_frame_breaks_the_chat_socket(world, fuzz_orchestrator):
    user = world.alpha.users["member"]
    conversation = await database_sync_to_async(_conversation)(fuzz_orchestrator, user)
    socket = await _open_socket(f"/ws/orgs/alpha/conversations/{conversation}/", user)
    for frame in _frames():
        parsed = _parsed(frame)
        if isinstance(parsed, dict) and parsed.get("type") == "message":
            if isinstance(parsed.get("content"), str) and "\\u" not in frame:
                continue  # a valid message starts a turn: tested in chat/tests, not fuzzed here
        await socket.send_to(text_data=frame)
        if isinstance(parsed, dict) and parsed.get("type") == "cancel":
            continue  # nothing in progress: a cancel has nothing to answer
        answer = await socket.receive_json_from(timeout=5)
        assert answer["type"] == "error", (frame[:200], answer)
    # Still open and serving after all of it.
    await socket.send_json_to({"type": "nope"})
    seen = [await socket.receive_json_from(timeout=5) for _ in range(1)]
    while seen[-1].get("code") != "unknown_type" and len(seen) < 100:
        seen.append(await socket.receive_json_from(timeout=5))
    assert seen[-1]["code"] == "unknown_type"
    await socket.disconnect()


def _parsed(frame: str):
    try:
        return json.loads(frame)
    except (ValueError, RecursionError):
        return None
