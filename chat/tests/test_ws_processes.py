"""The chat socket with a real client against real server processes: no browser, no Origin, two
processes on one database and Redis."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from cadence_site.testing import start_live_servers, test_database_url


@pytest.fixture(scope="module")
def two_servers(module_world, django_db_blocker):
    with django_db_blocker.unblock():
        url = test_database_url()
    started = start_live_servers(2, url)
    yield started
    for server in started:
        server.stop()


def _ws(server) -> str:
    return server.url.replace("http://", "ws://")


def _frames_until_done(ws, timeout: float = 30) -> list[dict]:
    frames, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = json.loads(ws.recv(timeout=deadline - time.monotonic()))
        frames.append(frame)
        if frame["type"] in ("done", "error") and frame.get("message_id"):
            return frames
        if frame["type"] == "error":
            return frames
    raise AssertionError(f"no done frame within {timeout} s: {frames}")


def test_a_tab_on_one_process_receives_a_reply_started_through_rest_on_the_other(
    world, chat_orchestrator, two_servers
):
    first, second = two_servers
    key = world.alpha.keys["member"]
    headers = {"Authorization": f"Bearer {key}"}
    conversation = httpx.post(
        f"{second.url}/api/v1/orgs/alpha/conversations/",
        json={"orchestrator": "slowbot"},
        headers=headers,
        timeout=30,
    ).json()["id"]

    # A script, not a browser: no Origin header, the key in the Authorization header.
    with connect(
        f"{_ws(first)}/ws/orgs/alpha/conversations/{conversation}/",
        additional_headers=headers,
        open_timeout=10,
    ) as tab:
        reply = httpx.post(
            f"{second.url}/api/v1/orgs/alpha/conversations/{conversation}/messages/",
            json={"content": "across processes"},
            headers=headers,
            timeout=60,
        )
        frames = _frames_until_done(tab)

    assert reply.status_code == 201, reply.text
    stored = reply.json()["reply"]["content"]
    assert stored == "Offline model. You said: across processes"
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "message.created"
    assert frames[0]["message"]["content"] == "across processes"
    assert "".join(f["delta"] for f in frames if f["type"] == "token") == stored
    assert frames[-1]["type"] == "done" and frames[-1]["status"] == "complete"


def test_a_ticket_works_without_origin_once(world, chat_orchestrator, two_servers):
    server = two_servers[0]
    headers = {"Authorization": f"Bearer {world.alpha.keys['member']}"}
    conversation = httpx.post(
        f"{server.url}/api/v1/orgs/alpha/conversations/",
        json={"orchestrator": "chatbot"},
        headers=headers,
        timeout=30,
    ).json()["id"]
    ticket = httpx.post(
        f"{server.url}/api/v1/orgs/alpha/ws-tickets/", headers=headers, timeout=30
    ).json()["ticket"]
    path = f"{_ws(server)}/ws/orgs/alpha/conversations/{conversation}/?ticket={ticket}"

    with connect(path, open_timeout=10) as tab:
        tab.send(json.dumps({"type": "message", "content": "by ticket"}))
        frames = _frames_until_done(tab)
    assert frames[-1]["type"] == "done"

    # Used up: the same ticket again is refused with a close code and a reason, not a bare 403.
    with connect(path, open_timeout=10) as again:
        with pytest.raises(ConnectionClosed):
            again.recv(timeout=10)
        assert again.close_code == 4401
        assert again.close_reason
