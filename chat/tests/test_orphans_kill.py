"""A server killed with SIGKILL mid-reply: real processes, nothing mocked (issue 8).

Server A streams four slow replies over SSE; once each has stored some text with a heartbeat,
A is frozen (SIGSTOP: alive, silent) and server B starts beside it. A cancel of reply 2 sent to B
is recorded and passed on (A still counts as alive). A is killed (SIGKILL). On B, a cancel of
reply 3 ends it at once (its owner is gone), and a new message in conversation 1 ends its reply
and is accepted at once. Server C starts: its start-up sweep ends reply 2 `cancelled` (a cancel
was asked) and reply 4 `failed` (`interrupted`), and conversation 4 takes a new message. Every
ended reply keeps the text stored before the kill, a prefix of what its client received; every
run is ended too.

Every wait polls with a deadline; no sleep waits out a heartbeat threshold (an owner on this host
that is gone is known at once, so CADENCE_ORPHAN_SECONDS is set long on purpose: only that rule
acts here; chat/tests/test_orphans.py covers the heartbeat's).
"""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest
from django_tenants.utils import schema_context

from cadence_site.testing import start_live_server, test_database_url

WORDS = " ".join(f"word{n}" for n in range(120))  # 125 tokens at 100 ms: 12 s of reply
BASE = "/api/v1/orgs/alpha/conversations"


@pytest.fixture
def orphan_orchestrator(world, committed_db):
    from chat.models import Conversation
    from orchestrators.models import LLMConfig, OrchestratorInstance
    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build

    def cleanup():
        with schema_context("org_alpha"):
            Conversation.objects.filter(orchestrator__slug="orphanbot").delete()
            OrchestratorInstance.objects.filter(slug="orphanbot").delete()
            LLMConfig.objects.filter(name="orphan-slow").delete()

    cleanup()
    with schema_context("org_alpha"):
        config = llm_config_create(
            name="orphan-slow", provider="offline", model="cadence-offline@100ms"
        )
        instance = orchestrator_create(slug="orphanbot", name="Orphanbot", llm_config=config)
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
def servers(orphan_orchestrator, tmp_path):
    started = []

    def start(name: str):
        output = (tmp_path / f"{name}.log").open("wb")
        server = start_live_server(test_database_url(), output=output, CADENCE_ORPHAN_SECONDS="600")
        started.append((server, output))
        return server

    yield start
    for server, output in started:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)
            server.stop()
        output.close()


def _until(check, what: str, seconds: float = 20):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class _Stream(threading.Thread):
    """One message sent over SSE; keeps the token deltas it receives until the server dies."""

    def __init__(self, base: str, key: str, conversation: str) -> None:
        super().__init__(daemon=True)
        self.base, self.key, self.conversation = base, key, conversation
        self.text = ""
        self.tokens = 0
        self._lock = threading.Lock()

    def run(self) -> None:
        import json

        try:
            with httpx.Client(base_url=self.base, timeout=60) as client:
                with client.stream(
                    "POST",
                    f"{BASE}/{self.conversation}/messages/",
                    json={"content": WORDS},
                    headers={
                        "Authorization": f"Bearer {self.key}",
                        "Accept": "text/event-stream",
                    },
                ) as response:
                    for line in response.iter_lines():
                        if line.startswith("data: "):
                            event = json.loads(line[6:])
                            if event.get("type") == "token":
                                with self._lock:
                                    self.text += event["delta"]
                                    self.tokens += 1
        except httpx.HTTPError:
            pass  # the server was killed

    def received(self) -> str:
        with self._lock:
            return self.text


def _reply(conversation: str):
    from chat.models import Message

    with schema_context("org_alpha"):
        return (
            Message.objects.filter(conversation_id=conversation, role="assistant")
            .order_by("seq")
            .first()
        )


def _run(run_id):
    from engine.models import Run

    with schema_context("org_alpha"):
        return Run.objects.get(pk=run_id)


def test_a_server_killed_mid_reply_leaves_no_conversation_broken(world, servers):
    key = world.alpha.keys["member"]
    a = servers("a")
    api_a = httpx.Client(base_url=a.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    conversations = [
        api_a.post(f"{BASE}/", json={"orchestrator": "orphanbot"}).json()["id"] for _ in range(4)
    ]
    streams = [_Stream(a.url, key, c) for c in conversations]
    for stream in streams:
        stream.start()

    # Each reply and its run have stored text with a heartbeat (which linked the reply to its
    # run), and each client has tokens.
    def heartbeats_seen():
        replies = [_reply(c) for c in conversations]
        return (
            all(r is not None and r.status == "streaming" and r.content for r in replies)
            and all(r.run_id and _run(r.run_id).output for r in replies)
            and all(s.tokens >= 5 for s in streams)
        )

    _until(heartbeats_seen, "a heartbeat with text on every reply")
    a.process.send_signal(signal.SIGSTOP)
    stored_at_stop = {c: _reply(c).content for c in conversations}
    c1, c2, c3, c4 = conversations

    b = servers("b")
    api_b = httpx.Client(base_url=b.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    # A frozen owner is still an owner: B's start-up sweep left every reply alone, and a cancel
    # is recorded and passed on through Redis.
    assert [_reply(c).status for c in conversations] == ["streaming"] * 4
    assert api_b.post(f"{BASE}/{c2}/cancel/").json() == {"cancelled": True}
    assert _reply(c2).status == "streaming" and _reply(c2).cancel_requested_at is not None

    a.process.kill()
    a.process.wait(timeout=10)
    for stream in streams:
        stream.join(timeout=10)
    received = {s.conversation: s.received() for s in streams}

    # Cancel on an orphan ends it at once.
    assert api_b.post(f"{BASE}/{c3}/cancel/").json() == {"cancelled": True}
    reply3 = _reply(c3)
    assert (reply3.status, reply3.error) == ("cancelled", "")
    run3 = _run(reply3.run_id)
    assert (run3.status, run3.error_code) == ("cancelled", "cancelled")

    # A new message in a conversation whose reply was orphaned is accepted at once.
    sent = api_b.post(f"{BASE}/{c1}/messages/", json={"content": "again"})
    assert sent.status_code == 201, sent.text
    assert sent.json()["reply"]["content"] == "Offline model. You said: again"
    reply1 = _reply(c1)
    assert reply1.status == "failed"
    assert reply1.error.startswith("interrupted: ")

    # A new server's start-up sweep ends the rest: cancelled where a cancel was asked.
    c = servers("c")
    api_c = httpx.Client(base_url=c.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    reply2, reply4 = _reply(c2), _reply(c4)
    assert (reply2.status, reply2.error) == ("cancelled", "")
    assert (reply4.status, reply4.error[:13]) == ("failed", "interrupted: ")
    assert (_run(reply2.run_id).status, _run(reply2.run_id).error_code) == (
        "cancelled",
        "cancelled",
    )
    run4 = _run(reply4.run_id)
    assert (run4.status, run4.error_code, run4.finished_at is not None) == (
        "failed",
        "interrupted",
        True,
    )
    assert (_run(reply1.run_id).status, _run(reply1.run_id).error_code) == (
        "failed",
        "interrupted",
    )

    # Every token stored before the kill is kept (the text of its last heartbeat, a second's
    # tokens at most behind what its client was sent), in the reply and in its run.
    full = f"Offline model. You said: {WORDS}"
    for conversation, reply in zip(conversations, [reply1, reply2, reply3, reply4], strict=True):
        assert reply.content and reply.content.startswith(stored_at_stop[conversation])
        assert full.startswith(reply.content) and full.startswith(received[conversation])
        assert full.startswith(_run(reply.run_id).output)
        assert _run(reply.run_id).output.startswith("Offline ")

    # Listed through the API as ended, and the last conversation takes a new message at once.
    listed = api_c.get(f"{BASE}/{c4}/messages/").json()["results"]
    assert [(m["role"], m["status"]) for m in listed] == [
        ("user", "complete"),
        ("assistant", "failed"),
    ]
    assert listed[1]["content"] == reply4.content
    sent = api_c.post(f"{BASE}/{c4}/messages/", json={"content": "back"})
    assert sent.status_code == 201, sent.text
    assert api_c.post(f"{BASE}/{c4}/cancel/").json() == {"cancelled": False}
