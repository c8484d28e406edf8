"""Orphan recovery in one process: owners, the sweep's verdicts and claims, a busy conversation
and a cancel that meet an orphaned reply, the timed heartbeat (chat/orphans.py,
engine/runs/orphans.py, engine/runs/owners.py). test_orphans_kill.py kills real servers."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone
from django_tenants.utils import schema_context

from chat import services
from chat.models import Message
from engine.models import Run
from engine.runs import owners, pipeline
from engine.runs.orphans import orphans_sweep

BASE = "/api/v1/orgs/alpha/conversations"
ELSEWHERE = "another-host|4242|boot|pid:[1]|99"  # another host: judged by its heartbeat only


def _dead_local_owner() -> str:
    """An owner on this host whose process has exited (and was reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    me = owners.current()
    return replace(me, pid=child.pid, started="1").token()


def _conversation(client, orchestrator="chatbot") -> str:
    response = client.post(f"{BASE}/", {"orchestrator": orchestrator}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


@pytest.fixture(autouse=True)
def _nothing_else_in_flight(world, committed_db):
    """Counts are exact: no run or reply of another test or an earlier session is in flight."""

    def clear():
        for schema_name in ("org_alpha", "org_bravo"):
            with schema_context(schema_name):
                Run.objects.filter(status="running").exclude(owner=owners.owner_token()).delete()
                Message.objects.filter(status="streaming").exclude(
                    owner=owners.owner_token()
                ).update(status="failed")

    clear()
    yield
    clear()


def _queued_run(*, owner: str, age: float) -> str:
    with schema_context("org_alpha"):
        return str(
            Run.objects.create(
                orchestrator_slug="chatbot",
                trigger="queue",
                owner=owner,
                heartbeat_at=timezone.now() - timedelta(seconds=age),
            ).pk
        )


def _in_flight(conversation_id, *, owner: str, age: float, text="Offline model. You"):
    """A reply and its run as a process left them: streaming/running, `age` seconds since the
    last heartbeat."""
    at = timezone.now() - timedelta(seconds=age)
    with schema_context("org_alpha"):
        services.message_append(
            conversation_id=conversation_id, role=Message.Role.USER, content="hello there"
        )
        reply = services.message_append(
            conversation_id=conversation_id,
            role=Message.Role.ASSISTANT,
            content="",
            status=Message.Status.STREAMING,
            owner=owner,
        )
        conversation = reply.conversation
        run = Run.objects.create(
            orchestrator_id=conversation.orchestrator_id,
            orchestrator_slug=conversation.orchestrator.slug,
            trigger="rest",
            conversation_id=conversation_id,
            owner=owner,
            heartbeat_at=at,
            output=text,
        )
        Message.objects.filter(pk=reply.pk).update(content=text, heartbeat_at=at, run=run)
    return str(reply.pk), str(run.pk)


def _state(message_id, run_id):
    with schema_context("org_alpha"):
        message = Message.objects.get(pk=message_id)
        run = Run.objects.get(pk=run_id)
    return (message.status, message.content, message.error), (
        run.status,
        run.error_code,
        run.output,
        run.finished_at is not None,
    )


# --- owners -------------------------------------------------------------------------------------


def test_an_owner_is_gone_only_when_this_host_can_tell():
    me = owners.current()
    assert owners.owner_gone(me.token()) is False
    assert owners.owner_gone(_dead_local_owner()) is True
    # This host's previous boot: every process of it is gone.
    assert owners.owner_gone(replace(me, boot="an-earlier-boot").token()) is True
    # A live pid that started at another time: the pid was reused, the owner is gone.
    assert owners.owner_gone(replace(me, started=str(int(me.started) + 1)).token()) is True
    # Another host, another pid namespace, or a token it cannot read: the heartbeat decides.
    assert owners.owner_gone(ELSEWHERE) is False
    assert owners.owner_gone(replace(me, pid=1, pidns="pid:[0]").token()) is False
    assert owners.owner_gone("") is False
    assert owners.owner_gone("not|a|token") is False
    assert owners.Owner.parse(me.token()) == me


# --- the sweep ----------------------------------------------------------------------------------


def test_the_sweep_ends_orphans_keeps_their_text_and_leaves_live_work_alone(
    world, chat_orchestrator, as_key, settings
):
    settings.CADENCE_ORPHAN_SECONDS = 5
    client = as_key(world.alpha.keys["member"])
    stale = _in_flight(_conversation(client), owner=ELSEWHERE, age=60)
    dead = _in_flight(_conversation(client), owner=_dead_local_owner(), age=0)
    fresh = _in_flight(_conversation(client), owner=ELSEWHERE, age=1)
    queued = _queued_run(owner=ELSEWHERE, age=60)

    assert orphans_sweep() == 4  # two replies and their runs
    assert orphans_sweep() == 0  # idempotent: claimed rows are no longer in flight

    interrupted = "interrupted: The server running this turn stopped before it finished"
    for ended in (stale, dead):
        message, run = _state(*ended)
        assert message[:2] == ("failed", "Offline model. You")
        assert message[2].startswith(interrupted)
        assert run == ("failed", "interrupted", "Offline model. You", True)
    assert _state(*fresh) == (
        ("streaming", "Offline model. You", ""),
        ("running", "", "Offline model. You", False),
    )
    # A queued run is recovered by engine/durable (claimed again through its lease), not ended.
    with schema_context("org_alpha"):
        assert Run.objects.get(pk=queued).status == "running"


def test_two_sweepers_at_once_end_each_orphan_once(world, chat_orchestrator, as_key):
    import threading

    from django.db import connection

    from engine.runs.tasks import runs_orphans_sweep

    client = as_key(world.alpha.keys["member"])
    orphans = [_in_flight(_conversation(client), owner=ELSEWHERE, age=3600) for _ in range(3)]
    orphans.append((None, _queued_run(owner=ELSEWHERE, age=3600)))
    with schema_context("org_alpha"):
        Run.objects.filter(pk=orphans[-1][1]).update(trigger="invoke")
    counts: list[int] = []
    start = threading.Barrier(2)

    def sweep(fn) -> None:
        start.wait()
        try:
            counts.append(fn())
        finally:
            connection.close()

    threads = [
        threading.Thread(target=sweep, args=(fn,)) for fn in (orphans_sweep, runs_orphans_sweep)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum(counts) == 7  # three replies, their three runs, one run of its own: each once
    for message_id, run_id in orphans[:3]:
        assert _state(message_id, run_id)[0][0] == "failed"
        assert _state(message_id, run_id)[1][:2] == ("failed", "interrupted")


def test_a_reply_whose_cancel_was_asked_ends_cancelled(world, chat_orchestrator, as_key, settings):
    settings.CADENCE_ORPHAN_SECONDS = 1
    client = as_key(world.alpha.keys["member"])
    message_id, run_id = _in_flight(_conversation(client), owner=ELSEWHERE, age=2)
    with schema_context("org_alpha"):
        Message.objects.filter(pk=message_id).update(cancel_requested_at=timezone.now())

    assert orphans_sweep() == 2

    assert _state(message_id, run_id) == (
        ("cancelled", "Offline model. You", ""),
        ("cancelled", "cancelled", "Offline model. You", True),
    )


def test_the_sweep_covers_every_organization(world, chat_orchestrator, as_key):
    client = as_key(world.alpha.keys["member"])
    alpha = _in_flight(_conversation(client), owner=ELSEWHERE, age=3600)
    with schema_context("org_bravo"):
        bravo = Run.objects.create(
            orchestrator_slug="elsewhere",
            trigger="invoke",
            owner=ELSEWHERE,
            heartbeat_at=timezone.now() - timedelta(hours=1),
        )
    try:
        assert orphans_sweep() == 3
        assert _state(*alpha)[0][0] == "failed"
        with schema_context("org_bravo"):
            assert Run.objects.get(pk=bravo.pk).error_code == "interrupted"
    finally:
        with schema_context("org_bravo"):
            Run.objects.filter(pk=bravo.pk).delete()


# --- a busy conversation, a cancel --------------------------------------------------------------


def test_a_new_message_ends_an_orphaned_reply_and_is_accepted_at_once(
    world, chat_orchestrator, as_key
):
    client = as_key(world.alpha.keys["member"])
    conversation = _conversation(client)
    orphan = _in_flight(conversation, owner=_dead_local_owner(), age=0)

    response = client.post(f"{BASE}/{conversation}/messages/", {"content": "again"}, format="json")

    assert response.status_code == 201, response.json()
    reply = response.json()["reply"]
    assert reply["content"] == "Offline model. You said: again"
    with schema_context("org_alpha"):
        message, run = Message.objects.get(pk=reply["message_id"]), Run.objects.get(pk=reply["run"])
    # The new reply and its run name this process as their owner, with a heartbeat.
    assert (message.owner, run.owner) == (owners.owner_token(), owners.owner_token())
    assert message.heartbeat_at is not None and run.heartbeat_at is not None
    assert _state(*orphan)[0][0] == "failed"
    assert _state(*orphan)[1][:2] == ("failed", "interrupted")


def test_a_live_reply_elsewhere_still_keeps_its_conversation_busy(world, chat_orchestrator, as_key):
    client = as_key(world.alpha.keys["member"])
    conversation = _conversation(client)
    live = _in_flight(conversation, owner=ELSEWHERE, age=0)

    response = client.post(f"{BASE}/{conversation}/messages/", {"content": "again"}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "turn_in_progress"
    assert _state(*live)[0][0] == "streaming"


def test_cancel_ends_an_orphaned_reply_at_once(world, chat_orchestrator, as_key):
    client = as_key(world.alpha.keys["member"])
    conversation = _conversation(client)
    orphan = _in_flight(conversation, owner=_dead_local_owner(), age=0)

    response = client.post(f"{BASE}/{conversation}/cancel/")

    assert (response.status_code, response.json()) == (200, {"cancelled": True})
    assert _state(*orphan) == (
        ("cancelled", "Offline model. You", ""),
        ("cancelled", "cancelled", "Offline model. You", True),
    )
    # Nothing left to cancel; the conversation takes a new message.
    assert client.post(f"{BASE}/{conversation}/cancel/").json() == {"cancelled": False}
    sent = client.post(f"{BASE}/{conversation}/messages/", {"content": "on"}, format="json")
    assert sent.status_code == 201


def test_cancel_of_a_live_reply_elsewhere_is_recorded_and_sent_to_its_process(
    world, chat_orchestrator, as_key
):
    import redis
    from django.conf import settings

    from chat.turns import cancel_key

    client = as_key(world.alpha.keys["member"])
    conversation = _conversation(client)
    live = _in_flight(conversation, owner=ELSEWHERE, age=0)

    response = client.post(f"{BASE}/{conversation}/cancel/")

    assert (response.status_code, response.json()) == (200, {"cancelled": True})
    assert _state(*live)[0][0] == "streaming"  # its process ends it, through the Redis flag
    assert redis.Redis.from_url(settings.REDIS_URL).exists(cancel_key("org_alpha", live[0]))
    with schema_context("org_alpha"):
        assert Message.objects.get(pk=live[0]).cancel_requested_at is not None


@pytest.mark.parametrize("who", ["other_org_key", "other_member", "viewer", "outsider"])
def test_outsiders_cannot_cancel_an_orphaned_reply(world, chat_orchestrator, as_key, api, who):
    owner_client = as_key(world.alpha.keys["member"])
    conversation = _conversation(owner_client)
    orphan = _in_flight(conversation, owner=_dead_local_owner(), age=0)
    api.credentials()
    if who == "other_org_key":
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {world.bravo.keys['owner']}")
    elif who == "other_member":  # another member's conversation is not theirs
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {world.alpha.keys['admin']}")
    elif who == "viewer":
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {world.alpha.keys['viewer']}")
    else:
        api.force_login(world.outsider)

    response = api.post(f"{BASE}/{conversation}/cancel/")

    assert response.status_code == {"viewer": 403}.get(who, 404), response.json()
    assert _state(*orphan)[0] == ("streaming", "Offline model. You", "")
    with schema_context("org_alpha"):
        assert Message.objects.get(pk=orphan[0]).cancel_requested_at is None


def test_cancel_with_a_bad_conversation_id_is_a_404(world, chat_orchestrator, as_key):
    client = as_key(world.alpha.keys["member"])
    assert client.post(f"{BASE}/not-a-uuid/cancel/").status_code == 404


# --- the heartbeat ------------------------------------------------------------------------------


class _Beats(pipeline.TurnExtension):
    def __init__(self) -> None:
        self.texts: list[str] = []

    async def on_progress(self, turn):
        self.texts.append("".join(turn.text))


def test_the_heartbeat_ticks_while_the_model_is_silent(world, chat_orchestrator, monkeypatch):
    from tenants.models import Organization

    monkeypatch.setattr(pipeline, "PROGRESS_SECONDS", 0.01)
    beats = _Beats()
    # Only this probe: the others' database and Redis writes would space the beats out.
    monkeypatch.setattr(pipeline, "_extensions", [beats])
    org = Organization.objects.get(schema_name="org_alpha")
    outcome = async_to_sync(pipeline.turn_run)(
        pipeline.TurnRequest(
            schema_name=org.schema_name,
            org_slug=org.slug,
            ref="slowbot",  # 60 ms between tokens: several beats between two tokens
            message="hi",
            history=[],
            trigger="invoke",
        )
    )

    assert outcome.status == "succeeded"
    # Beats with the same text follow each other: they came from the clock, not from tokens.
    repeats = sum(1 for a, b in zip(beats.texts, beats.texts[1:], strict=False) if a == b)
    assert repeats >= 3, beats.texts
    assert beats.texts[-1] == "Offline model. You said: hi"


def test_replies_beating_together_are_written_in_one_statement(world, chat_orchestrator, as_key):
    """Streaming replies of one loop that beat within BEAT_GATHER_SECONDS share one write: each
    gets its text and heartbeat, and its run once the run's row exists; another owner's reply
    and a finished one are left alone."""
    import asyncio

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from chat import orphans

    client = as_key(world.alpha.keys["member"])
    mine = owners.owner_token()
    first, second, theirs = (_conversation(client) for _ in range(3))
    (a, run_a), (b, _), (c, _) = (
        _in_flight(first, owner=mine, age=30),
        _in_flight(second, owner=mine, age=30),
        _in_flight(theirs, owner="someone-else", age=30),
    )
    with schema_context("org_alpha"):
        Message.objects.filter(pk=b).update(run=None)
        run_b = str(Run.objects.filter(conversation_id=second).values_list("pk", flat=True)[0])
    writes = []
    real_write = orphans._replies_beat

    def counted(**kwargs):
        with CaptureQueriesContext(connection) as queries:
            real_write(**kwargs)
        writes.append(len([q for q in queries if q["sql"].startswith("UPDATE")]))

    async def beat_both():
        gatherer = orphans.BeatGatherer(counted)
        await asyncio.gather(
            gatherer.beat(("org_alpha", first, mine), (run_a, "first so far")),
            gatherer.beat(("org_alpha", second, mine), (run_b, "second so far")),
            gatherer.beat(("org_alpha", theirs, mine), (None, "not mine to write")),
        )

    before = timezone.now()
    async_to_sync(beat_both)()

    assert writes == [1]
    with schema_context("org_alpha"):
        rows = {str(m.pk): m for m in Message.objects.filter(pk__in=[a, b, c])}
    assert (rows[a].content, rows[b].content) == ("first so far", "second so far")
    assert rows[a].heartbeat_at >= before and rows[b].heartbeat_at >= before
    assert str(rows[b].run_id) == run_b  # linked now that its run's row exists
    assert rows[c].content == "Offline model. You" and rows[c].heartbeat_at < before


# --- the chat socket ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_socket_cancel_ends_an_orphaned_reply_and_open_tabs_see_it_end(
    world, chat_orchestrator
):
    from channels.db import database_sync_to_async

    from chat.tests.test_ws import _make_conversation, _open, _until_done

    user = world.alpha.users["member"]
    conversation = await database_sync_to_async(_make_conversation)(chat_orchestrator["fast"], user)
    dead = await database_sync_to_async(_dead_local_owner)()
    orphan = await database_sync_to_async(_in_flight)(conversation, owner=dead, age=0)
    tab, connected, _ = await _open(conversation, user)
    assert connected

    await tab.send_json_to({"type": "cancel"})
    frames = await _until_done(tab)

    assert (frames[-1]["message_id"], frames[-1]["status"]) == (orphan[0], "cancelled")
    assert frames[-1]["content"] == "Offline model. You"
    assert await database_sync_to_async(_state)(*orphan) == (
        ("cancelled", "Offline model. You", ""),
        ("cancelled", "cancelled", "Offline model. You", True),
    )
    await tab.send_json_to({"type": "message", "content": "next"})
    frames = await _until_done(tab)
    assert (frames[-1]["status"], frames[-1]["content"]) == (
        "complete",
        "Offline model. You said: next",
    )
    await tab.disconnect()


@pytest.mark.asyncio
async def test_a_viewers_socket_cannot_cancel_an_orphaned_reply(world, chat_orchestrator):
    from channels.db import database_sync_to_async

    from chat.tests.test_ws import _make_conversation, _open

    viewer = world.alpha.users["viewer"]
    conversation = await database_sync_to_async(_make_conversation)(
        chat_orchestrator["fast"], viewer
    )
    dead = await database_sync_to_async(_dead_local_owner)()
    orphan = await database_sync_to_async(_in_flight)(conversation, owner=dead, age=0)
    tab, connected, _ = await _open(conversation, viewer)
    assert connected

    await tab.send_json_to({"type": "cancel"})
    frame = await tab.receive_json_from(timeout=5)

    assert (frame["type"], frame["code"]) == ("error", "role_required")
    assert (await database_sync_to_async(_state)(*orphan))[0][0] == "streaming"
    await tab.disconnect()


# --- one reply at a time, whatever begins it ------------------------------------------------------


def test_two_begins_at_once_in_one_conversation_give_one_reply(world, chat_orchestrator, as_key):
    """The second begin waits on the conversation's row while the first is uncommitted, then finds
    the reply streaming (without the lock it would append a second streaming reply)."""
    import threading

    from django.db import connection, transaction

    from cadence_site.errors import ApplicationError
    from chat.turns import reply_begin

    conversation_id = _conversation(as_key(world.alpha.keys["member"]))
    first_holds, release = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}

    def first():
        try:
            with schema_context("org_alpha"), transaction.atomic():
                reply_begin(conversation_id=conversation_id, content="one")
                first_holds.set()
                release.wait(10)
            outcomes["first"] = "ok"
        finally:
            connection.close()

    def second():
        try:
            with schema_context("org_alpha"):
                reply_begin(conversation_id=conversation_id, content="two")
            outcomes["second"] = "ok"
        except ApplicationError as exc:
            outcomes["second"] = exc.code
        finally:
            connection.close()

    a = threading.Thread(target=first)
    a.start()
    assert first_holds.wait(10)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.5)
    assert b.is_alive()  # waiting on the conversation's row
    release.set()
    a.join(10)
    b.join(10)

    assert outcomes == {"first": "ok", "second": "turn_in_progress"}
    with schema_context("org_alpha"):
        streaming = Message.objects.filter(
            conversation_id=conversation_id, status=Message.Status.STREAMING
        ).count()
    assert streaming == 1
