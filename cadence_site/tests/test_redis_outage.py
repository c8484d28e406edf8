"""Losing Redis slows Cadence but keeps it serving: a real Redis process, killed mid-reply.

The server under test runs in its own process on its own redis-server (started here, on a free
port, and the only process this test kills). While Redis is away: the reply in progress finishes
and is stored, REST and /v1 turns run, logins work from the database, ticket issue answers 503,
/readyz answers 503 naming Redis, and no response names the internal address. When Redis comes
back on the same port, everything resumes.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time

import httpx
import pytest
import redis
from django_tenants.utils import schema_context

from cadence_site.testing import start_live_server, test_database_url

REDIS_SERVER = "/usr/bin/redis-server"
LONG = "tell me a long story about streams and stores " * 12


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_redis(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("redis-server did not start")


@pytest.fixture
def outage_orchestrator(world, committed_db):
    from chat.models import Conversation
    from orchestrators.models import LLMConfig, OrchestratorInstance
    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build

    def cleanup():
        with schema_context("org_alpha"):
            Conversation.objects.filter(orchestrator__slug="outagebot").delete()
            OrchestratorInstance.objects.filter(slug="outagebot").delete()
            LLMConfig.objects.filter(name="outage-slow").delete()

    cleanup()
    with schema_context("org_alpha"):
        config = llm_config_create(
            name="outage-slow", provider="offline", model="cadence-offline@30ms"
        )
        instance = orchestrator_create(slug="outagebot", name="Outagebot", llm_config=config)
    assert (
        instance_build(
            schema_name="org_alpha",
            instance_id=str(instance.id),
            expected_hash=instance.config_hash,
        )
        == "ready"
    )
    yield instance
    cleanup()


@pytest.fixture
def own_redis_server(world, outage_orchestrator):
    port = _free_port()
    state = {"redis": _start_redis(port)}
    server = start_live_server(test_database_url(), REDIS_URL=f"redis://127.0.0.1:{port}/0")
    try:
        yield server, port, state
    finally:
        server.stop()
        if state["redis"].poll() is None:
            state["redis"].kill()
            state["redis"].wait(timeout=10)


def _no_address(response: httpx.Response, port: int) -> None:
    assert str(port) not in response.text, response.text


def _login(base: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=20)
    page = client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = client.post(
        "/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base}/accounts/login/"},
    )
    assert response.status_code == 302, response.text[:300]
    return client


def test_a_redis_outage_mid_reply_slows_cadence_and_breaks_nothing(world, own_redis_server):
    server, port, state = own_redis_server
    key = world.alpha.keys["member"]
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert api.post("/api/v1/orgs/alpha/ws-tickets/").status_code == 201
    conversation = api.post(
        "/api/v1/orgs/alpha/conversations/", json={"orchestrator": "outagebot"}
    ).json()["id"]

    # A reply streams over SSE; Redis is killed after its first tokens.
    events: list[tuple[str, dict]] = []
    first_token = threading.Event()

    def stream():
        with api.stream(
            "POST",
            f"/api/v1/orgs/alpha/conversations/{conversation}/messages/",
            json={"content": LONG},
            headers={"Accept": "text/event-stream"},
        ) as response:
            kind = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
                    if kind == "token":
                        first_token.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_token.wait(20)
    state["redis"].kill()
    state["redis"].wait(timeout=10)
    reader.join(60)

    done = [data for kind, data in events if kind == "done"]
    assert len(done) == 1 and done[0]["status"] == "complete", events[-3:]
    assert done[0]["content"] == f"Offline model. You said: {LONG.strip()}"
    assert str(port) not in json.dumps(events)

    ready = api.get("/readyz")
    assert ready.status_code == 503 and ready.json()["unavailable"] == ["redis"]
    _no_address(ready, port)

    ticket = api.post("/api/v1/orgs/alpha/ws-tickets/")
    assert (ticket.status_code, ticket.json()["error"]["code"]) == (503, "tickets_unavailable")
    _no_address(ticket, port)

    turn = api.post(
        f"/api/v1/orgs/alpha/conversations/{conversation}/messages/", json={"content": "still up?"}
    )
    assert turn.status_code == 201, turn.text[:300]
    assert turn.json()["reply"]["content"] == "Offline model. You said: still up?"

    completion = api.post(
        "/v1/chat/completions",
        json={"model": "outagebot", "messages": [{"role": "user", "content": "and /v1?"}]},
    )
    assert completion.status_code == 200, completion.text[:300]
    assert completion.json()["choices"][0]["message"]["content"] == (
        "Offline model. You said: and /v1?"
    )

    session = _login(server.url, "alpha-member", "pw-member")
    me = session.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["user"]["username"] == "alpha-member"

    # Redis returns on the same port: tickets and readiness come back by themselves.
    state["redis"] = _start_redis(port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if api.post("/api/v1/orgs/alpha/ws-tickets/").status_code == 201:
            break
        time.sleep(0.2)
    assert api.post("/api/v1/orgs/alpha/ws-tickets/").status_code == 201
    assert api.get("/readyz").status_code == 200
    assert session.get("/api/v1/me").status_code == 200
