"""A client that goes away mid-reply is an everyday event: the server logs no error for it (issue 8,
item 7: no "Task exception was never retrieved"), and the reply is still stored.

A real server, its log in a file: a reply streamed over SSE, one over the chat WebSocket and one
over /v1 (streaming), each client gone after its first tokens. Once the replies are stored, more
requests run (the garbage collector frees what the disconnects left behind, which is when asyncio
reports a task's unretrieved exception), then the server stops and its log is read.
"""

from __future__ import annotations

import json
import socket
import struct
import time

import httpx
import pytest
from django_tenants.utils import schema_context
from websockets.sync.client import connect

from cadence_site.testing import start_live_server, test_database_url

BASE = "/api/v1/orgs/alpha/conversations"
WORDS = " ".join(f"word{n}" for n in range(30))


@pytest.fixture
def logged_server(chat_orchestrator, tmp_path):
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        server = start_live_server(test_database_url(), log_level="info", output=output)
        try:
            yield server, log
        finally:
            if server.process.poll() is None:
                server.stop()


def _until(check, what: str, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _reply_status(conversation: str) -> str | None:
    from chat.models import Message

    with schema_context("org_alpha"):
        return (
            Message.objects.filter(conversation_id=conversation, role="assistant")
            .values_list("status", flat=True)
            .first()
        )


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset: no FIN, no close frame, as a client that crashed or lost its network."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _raw_post(port: int, path: str, body: dict, headers: dict) -> socket.socket:
    data = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(data)}"]
    lines += ["Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items())]
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    return sock


def test_clients_that_leave_mid_reply_log_no_error(world, logged_server):
    server, log = logged_server
    key = world.alpha.keys["member"]
    headers = {"Authorization": f"Bearer {key}"}
    api = httpx.Client(base_url=server.url, headers=headers, timeout=30)
    sse, ws, reset_ws, reset_sse = (
        api.post(f"{BASE}/", json={"orchestrator": "slowbot"}).json()["id"] for _ in range(4)
    )

    # SSE: the connection closes after the first token.
    with api.stream(
        "POST",
        f"{BASE}/{sse}/messages/",
        json={"content": WORDS},
        headers={"Accept": "text/event-stream"},
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:]).get("type") == "token":
                break

    # The chat socket: closed after the first token frame.
    ws_url = server.url.replace("http://", "ws://")
    with connect(
        f"{ws_url}/ws/orgs/alpha/conversations/{ws}/",
        additional_headers=headers,
        open_timeout=10,
    ) as socket:
        socket.send(json.dumps({"type": "message", "content": WORDS}))
        while json.loads(socket.recv(timeout=10)).get("type") != "token":
            pass

    # /v1, streaming: closed after the first chunk with content.
    with api.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "slowbot", "stream": True, "messages": [{"role": "user", "content": WORDS}]},
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get(
                "content"
            ):
                break

    # Clients that vanish without a goodbye (the connection reset mid-stream): a socket, and SSE.
    with connect(
        f"{ws_url}/ws/orgs/alpha/conversations/{reset_ws}/",
        additional_headers=headers,
        open_timeout=10,
    ) as socket:
        socket.send(json.dumps({"type": "message", "content": WORDS}))
        while json.loads(socket.recv(timeout=10)).get("type") != "token":
            pass
        _reset(socket.socket)
    raw = _raw_post(
        server.port,
        f"{BASE}/{reset_sse}/messages/",
        {"content": WORDS},
        {**headers, "Accept": "text/event-stream"},
    )
    _until(lambda: b"event: token" in raw.recv(65536), "a token over raw SSE")
    _reset(raw)

    # The replies go on without their clients and are stored whole.
    _until(lambda: _reply_status(sse) == "complete", "the SSE reply")
    _until(lambda: _reply_status(ws) == "complete", "the socket's reply")
    _until(lambda: _reply_status(reset_ws) == "complete", "the reset socket's reply")
    _until(lambda: _reply_status(reset_sse) == "complete", "the reset SSE reply")
    for _ in range(30):
        assert api.get(f"{BASE}/{sse}/messages/").status_code == 200
    server.stop()

    text = log.read_text()
    assert f"/api/v1/orgs/alpha/conversations/{sse}/messages/" in text  # the log was written
    for phrase in ("never retrieved", "Traceback", '"level": "ERROR"', "Exception in ASGI"):
        assert phrase not in text, text[-3000:]
