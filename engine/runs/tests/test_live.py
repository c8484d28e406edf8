"""Runs, live: the run socket (live frames, resume after a cursor, replay of an ended run), the
organization's runs socket (privacy, filter), who is refused, and structured run logs (captured,
redacted, bounded, stored, streamed, read over REST, searched)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django_tenants.utils import schema_context

from cadence_site.asgi import application
from cadence_site.testing import ws_connect
from engine.models import Run, RunEvent, RunLog
from engine.runs import pipeline

HOST = [(b"host", b"127.0.0.1")]
LLM_KEY = "canary-llm-key-0001"
note_log = logging.getLogger("plugins.example.talk")


def _runtime(orchestrator, gates: list[asyncio.Event] | None = None, lines: int = 2, say: str = ""):
    """The chatbot's instance running a flow whose notes log, each waiting on its gate."""
    from orchestrators.adapters.cadence import NativeAdapter
    from orchestrators.pool import Acquired
    from orchestrators.runtime import LLMSettings, RuntimeConfig

    async def talk(score) -> None:
        note_log.info("talk: thinking about %s", "the answer")
        if say:
            note_log.info(say)
        for n in range(lines - 1):
            note_log.warning("talk: line %d, key sk-canary1234567 and %s", n, LLM_KEY)
        if gates:
            await gates[0].wait()

    async def more(score) -> None:
        note_log.error("more: almost there")
        if gates:
            await gates[1].wait()

    config = RuntimeConfig(
        org_slug="alpha",
        instance_id=str(orchestrator.id),
        slug=orchestrator.slug,
        framework="cadence",
        flow={
            "name": "talky",
            "steps": [
                {"then": "prepare_prompt"},
                {"then": "talk"},
                {"then": "more"},
                {"then": "agent"},
                {"then": "finalize"},
            ],
        },
        system_prompt="",
        llm=LLMSettings(provider="offline", model="cadence-offline", api_key=LLM_KEY),
        notes={"talk": talk, "more": more},
    )
    return Acquired(
        runtime=NativeAdapter().build(config),
        instance_id=str(orchestrator.id),
        slug=orchestrator.slug,
        config_hash=orchestrator.config_hash,
        version=1,
    )


def _request(acquired, **owner) -> pipeline.TurnRequest:
    return pipeline.TurnRequest(
        schema_name="org_alpha",
        org_slug="alpha",
        ref=acquired.slug,
        message="hello",
        history=[],
        trigger="invoke",
        acquired=acquired,
        **owner,
    )


def _exists(run_id: str) -> bool:
    with schema_context("org_alpha"):
        return Run.objects.filter(pk=run_id).exists()


async def _row_written(run_id: str) -> None:
    for _ in range(100):
        if await database_sync_to_async(_exists)(run_id):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the run's row was not written")


def _ticket(user, slug: str = "alpha") -> str:
    from tenants import tickets
    from tenants.resolution import org_by_slug

    return tickets.ticket_issue(org=org_by_slug(slug), user=user)


async def _open(path: str, user=None, headers=HOST):
    if user is not None:
        ticket = await database_sync_to_async(_ticket)(user)
        path += ("&" if "?" in path else "?") + f"ticket={ticket}"
    socket = WebsocketCommunicator(application, path, headers=headers)
    opened, _ = await ws_connect(socket)
    return socket, opened


async def _until(socket, done, wait: float = 10) -> list[dict]:
    frames = []
    while True:
        frame = await socket.receive_json_from(timeout=wait)
        frames.append(frame)
        if done(frame):
            return frames


async def _to_the_close(socket, wait: float = 10) -> tuple[list[dict], dict]:
    frames = []
    while True:
        message = await socket.receive_output(timeout=wait)
        if message["type"] == "websocket.close":
            return frames, message
        frames.append(json.loads(message["text"]))


def _logged(text: str):
    return lambda frame: frame["type"] == "log" and frame["message"].startswith(text)


# --- the run socket ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_frames_arrive_live_resume_after_a_cursor_and_replay_the_same_once_ended(
    world, chat_orchestrator
):
    member = world.alpha.users["member"]
    gates = [asyncio.Event(), asyncio.Event()]
    request = _request(_runtime(chat_orchestrator["fast"], gates), owner_user_id=member.pk)
    task = pipeline.turn_launch(pipeline.turn_run(request))
    await _row_written(request.run_id)
    path = f"/ws/orgs/alpha/runs/{request.run_id}/"

    # Live: while `talk` waits, its start and its lines have arrived.
    first, opened = await _open(path, member)
    assert opened
    seen = await _until(first, _logged("talk: line 0"))
    assert not task.done()
    # prepare_prompt started and ended before its frames were sent: one frame, ended (its start
    # frame too when the sender ran in between).
    steps = [(f["name"], f["status"]) for f in seen if f["type"] == "step"]
    assert steps[-2:] == [("prepare_prompt", "completed"), ("talk", "running")]
    assert [f["cursor"] for f in seen] == list(range(1, len(seen) + 1))
    talk, info, warning = seen[-3:]
    assert (info["step"], info["level"], info["logger"], info["message"]) == (
        talk["seq"],
        "info",
        "plugins.example.talk",
        "talk: thinking about the answer",
    )
    # Secrets are gone before a line leaves the process: the run's model key and key patterns.
    assert warning["message"] == "talk: line 0, key sk-[redacted] and [redacted]"
    assert (warning["level"], bool(warning["worker"]), warning["at"][:2]) == ("warning", True, "20")
    await first.disconnect()

    # The run goes on unwatched; a reconnect after the last cursor seen gets what followed.
    gates[0].set()
    last = seen[-1]["cursor"]
    second, opened = await _open(f"{path}?after={last}", member)
    assert opened
    resumed = await _until(second, _logged("more: almost there"))
    assert [f["cursor"] for f in resumed] == list(range(last + 1, last + 1 + len(resumed)))
    assert [(f["type"], f.get("name"), f.get("status")) for f in resumed] == [
        ("step", "talk", "completed"),
        ("step", "more", "running"),
        ("log", None, None),
    ]
    gates[1].set()
    rest, closed = await _to_the_close(second)
    outcome = await task

    live = seen + resumed + rest
    assert outcome.status == "succeeded"
    assert [f["cursor"] for f in live] == list(range(1, len(live) + 1))
    assert live[-1] == {
        "type": "run",
        "cursor": len(live),
        "id": request.run_id,
        "status": "succeeded",
        "finished_at": live[-1]["finished_at"],
        "duration_ms": live[-1]["duration_ms"],
        "error_code": "",
    }
    assert (closed["code"], closed["reason"]) == (1000, "run_ended")
    assert {f["name"] for f in live if f["type"] == "step"} >= {"agent", "llm_call", "finalize"}

    # Ended: the same frames again, from the database, whole or after a cursor.
    replayed, closed = await _to_the_close((await _open(path, member))[0])
    assert replayed == live
    assert (closed["code"], closed["reason"]) == (1000, "run_ended")
    tail, _ = await _to_the_close((await _open(f"{path}?after={last + 2}", member))[0])
    assert tail == live[last + 2 :]


def _steps_json(run_id: str) -> list[dict]:
    from engine.runs.export import step_output

    with schema_context("org_alpha"):
        return [step_output(s) for s in RunEvent.objects.filter(run_id=run_id).order_by("seq")]


@pytest.mark.asyncio
async def test_step_frames_as_ended_are_the_steps_the_api_returns(world, chat_orchestrator):
    admin = world.alpha.users["admin"]
    request = _request(_runtime(chat_orchestrator["fast"]), owner_user_id=admin.pk)
    await pipeline.turn_run(request)

    frames, _ = await _to_the_close(
        (await _open(f"/ws/orgs/alpha/runs/{request.run_id}/", admin))[0]
    )

    ended = {f["seq"]: f for f in frames if f["type"] == "step" and f["status"] != "running"}
    stored = await database_sync_to_async(_steps_json)(request.run_id)
    assert [ended[s["seq"]] | {} for s in stored] == [
        {"type": "step", "cursor": ended[s["seq"]]["cursor"], **s} for s in stored
    ]


def _run_row(owner_user_id=None, status="succeeded", **fields) -> str:
    with schema_context("org_alpha"):
        run = Run.objects.create(
            orchestrator_slug="bot",
            trigger="invoke",
            status=status,
            owner_user_id=owner_user_id,
            duration_ms=12.5,
            **fields,
        )
        RunEvent.objects.create(
            run=run, seq=1, kind="note", name="legacy_note", outcome="completed", at=run.started_at
        )
    return str(run.id)


def _run_delete(run_id: str) -> None:
    with schema_context("org_alpha"):
        Run.objects.filter(pk=run_id).delete()


@pytest.fixture
def stored_runs(world, committed_db):
    made = {
        "member": _run_row(world.alpha.users["member"].pk),
        "admin": _run_row(world.alpha.users["admin"].pk),
    }
    yield made
    for run_id in made.values():
        _run_delete(run_id)


@pytest.mark.asyncio
async def test_a_run_recorded_before_cursors_replays_its_steps_then_the_run(world, stored_runs):
    frames, closed = await _to_the_close(
        (await _open(f"/ws/orgs/alpha/runs/{stored_runs['member']}/", world.alpha.users["admin"]))[
            0
        ]
    )

    assert [(f["type"], f["cursor"], f.get("name"), f["status"]) for f in frames] == [
        ("step", 1, "legacy_note", "completed"),
        ("run", 2, None, "succeeded"),
    ]
    assert (frames[1]["duration_ms"], closed["code"]) == (12.5, 1000)


def _key_headers(secret: str) -> list[tuple[bytes, bytes]]:
    return [*HOST, (b"authorization", f"Bearer {secret}".encode())]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("who", "run", "query", "code", "reason"),
    [
        ("bravo_key", "member", "", 4404, "not_found"),
        ("bravo_ticket", "member", "", 4404, "not_found"),
        ("outsider", "member", "", 4404, "not_found"),
        ("member", "admin", "", 4404, "run_not_found"),
        ("viewer", "member", "", 4404, "run_not_found"),
        ("member_key", "member", "", 4404, "run_not_found"),
        ("member", "nowhere", "", 4404, "run_not_found"),
        ("member", "not-a-uuid", "", 4404, "run_not_found"),
        ("member", "member", "?after=-1", 4400, "invalid_cursor: after must be a cursor"),
        ("member", "member", "?after=x%00", 4400, "invalid_cursor: after must be a cursor"),
        ("member", "member", "?colour=red", 4400, "invalid_parameter: unknown parameter colour"),
        ("nobody", "member", "", 4401, "authentication_required"),
    ],
)
async def test_the_run_socket_refuses(world, stored_runs, who, run, query, code, reason):
    run_id = {"nowhere": str(uuid.uuid4()), "not-a-uuid": "not-a-uuid"}.get(run) or stored_runs[run]
    path = f"/ws/orgs/alpha/runs/{run_id}/{query}"
    headers, user = HOST, None
    if who == "bravo_key":
        headers = _key_headers(world.bravo.keys["owner"])
    elif who == "member_key":
        headers = _key_headers(world.alpha.keys["member"])
    elif who == "bravo_ticket":
        ticket = await database_sync_to_async(_ticket)(world.bravo.users["owner"], "bravo")
        path += ("&" if "?" in path else "?") + f"ticket={ticket}"
    elif who == "outsider":
        headers = [
            *HOST,
            (b"origin", b"http://127.0.0.1"),
            (b"cookie", await _cookie(world.outsider)),
        ]
    elif who != "nobody":
        user = world.alpha.users[who]

    socket, opened = await _open(path, user, headers)

    assert opened is False
    assert socket.refusal["code"] == code
    assert socket.refusal["reason"].startswith(reason)


async def _cookie(user) -> bytes:
    from django.test import Client

    def login():
        client = Client()
        client.force_login(user)
        return client.cookies["sessionid"].value

    return f"sessionid={await database_sync_to_async(login)()}".encode()


@pytest.fixture
def member_key(world, committed_db):
    from tenants.models import ApiKey
    from tenants.services import api_key_create

    key, secret = api_key_create(
        org=world.alpha.org,
        name="live watcher",
        role="member",
        creator_role="owner",
        created_by=world.alpha.users["member"],
    )
    yield key, secret
    ApiKey.objects.filter(pk=key.pk).delete()


def _revoke(key_id) -> None:
    from tenants.models import ApiKey
    from tenants.services import api_key_revoke

    api_key_revoke(key=ApiKey.objects.get(pk=key_id), actor_role="owner")


@pytest.mark.asyncio
async def test_a_revoked_key_closes_the_socket_watching_its_run(
    world, chat_orchestrator, member_key
):
    key, secret = member_key
    gates = [asyncio.Event(), asyncio.Event()]
    request = _request(_runtime(chat_orchestrator["fast"], gates), owner_api_key_id=str(key.pk))
    task = pipeline.turn_launch(pipeline.turn_run(request))
    await _row_written(request.run_id)
    socket, opened = await _open(
        f"/ws/orgs/alpha/runs/{request.run_id}/", headers=_key_headers(secret)
    )
    assert opened
    await _until(socket, _logged("talk: line 0"))
    await asyncio.sleep(0.2)  # the socket's rights feed is subscribed

    await database_sync_to_async(_revoke)(key.pk)
    _, closed = await _to_the_close(socket, wait=2)

    assert (closed["code"], closed["reason"]) == (4401, "api_key_revoked")
    gates[0].set()
    gates[1].set()
    assert (await task).status == "succeeded"


# --- the organization's runs socket ----------------------------------------------------------


@pytest.mark.asyncio
async def test_the_runs_socket_shows_each_caller_the_runs_they_may_see(world, chat_orchestrator):
    users = world.alpha.users
    sockets = {}
    for role, query in (
        ("member", ""),
        ("viewer", ""),
        ("admin", ""),
        ("owner", "?orchestrator=x"),
    ):
        sockets[role], opened = await _open(f"/ws/orgs/alpha/runs/{query}", users[role])
        assert opened
    await asyncio.sleep(0.3)  # subscribed to the organization's feed

    mine = _request(_runtime(chat_orchestrator["fast"]), owner_user_id=users["member"].pk)
    await pipeline.turn_run(mine)
    theirs = _request(_runtime(chat_orchestrator["fast"]), owner_user_id=users["viewer"].pk)
    await pipeline.turn_run(theirs)

    def run_ended(run_id):
        return lambda frame: frame["id"] == run_id and frame["status"] != "running"

    member_frames = await _until(sockets["member"], run_ended(mine.run_id))
    viewer_frames = await _until(sockets["viewer"], run_ended(theirs.run_id))
    admin_frames = await _until(sockets["admin"], run_ended(theirs.run_id))

    assert [(f["id"], f["status"]) for f in member_frames] == [
        (mine.run_id, "running"),
        (mine.run_id, "succeeded"),
    ]
    assert [f["id"] for f in viewer_frames] == [theirs.run_id, theirs.run_id]
    assert [f["id"] for f in admin_frames] == [mine.run_id] * 2 + [theirs.run_id] * 2
    started, ended = member_frames
    assert set(started) == {
        "type",
        "id",
        "status",
        "orchestrator",
        "trigger",
        "started_at",
        "finished_at",
        "duration_ms",
        "error_code",
    }
    assert started["orchestrator"] == {"id": str(chat_orchestrator["fast"].id), "slug": "chatbot"}
    assert (started["trigger"], started["finished_at"], ended["started_at"]) == (
        "invoke",
        None,
        started["started_at"],
    )
    assert ended["finished_at"] is not None and ended["duration_ms"] > 0
    # The owner filtered on another orchestrator: nothing, while runs of chatbot came and went.
    assert await sockets["owner"].receive_nothing(timeout=0.3) is True
    for socket in sockets.values():
        await socket.disconnect()


@pytest.mark.asyncio
async def test_the_runs_socket_filters_by_orchestrator_id_or_slug(world, chat_orchestrator):
    admin = world.alpha.users["admin"]
    fast, slow = chat_orchestrator["fast"], chat_orchestrator["slow"]
    by_slug, _ = await _open("/ws/orgs/alpha/runs/?orchestrator=slowbot", admin)
    by_id, _ = await _open(f"/ws/orgs/alpha/runs/?orchestrator={slow.id}", admin)
    await asyncio.sleep(0.3)

    await pipeline.turn_run(_request(_runtime(fast), owner_user_id=admin.pk))
    wanted = _request(_runtime(slow), owner_user_id=admin.pk)
    await pipeline.turn_run(wanted)

    for socket in (by_slug, by_id):
        frames = [await socket.receive_json_from(timeout=5) for _ in range(2)]
        assert [(f["id"], f["orchestrator"]["slug"]) for f in frames] == [
            (wanted.run_id, "slowbot")
        ] * 2
        await socket.disconnect()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("?orchestrator=no%20spaces", "invalid_filter: orchestrator"),
        ("?orchestrator=" + "x" * 64, "invalid_filter: orchestrator"),
        ("?since=yesterday", "invalid_parameter: unknown parameter since"),
    ],
)
async def test_the_runs_socket_refuses_bad_filters(world, committed_db, query, reason):
    socket, opened = await _open(f"/ws/orgs/alpha/runs/{query}", world.alpha.users["admin"])

    assert (opened, socket.refusal["code"]) == (False, 4400)
    assert socket.refusal["reason"].startswith(reason)


@pytest.mark.asyncio
async def test_the_runs_socket_refuses_outsiders(world, committed_db):
    for headers in (_key_headers(world.bravo.keys["owner"]), HOST):
        socket, opened = await _open("/ws/orgs/alpha/runs/", headers=headers)
        assert opened is False
        assert socket.refusal["code"] in (4401, 4404)
    outsider = [*HOST, (b"origin", b"http://127.0.0.1"), (b"cookie", await _cookie(world.outsider))]
    socket, opened = await _open("/ws/orgs/alpha/runs/", headers=outsider)
    assert (opened, socket.refusal["code"], socket.refusal["reason"]) == (False, 4404, "not_found")


# --- structured run logs ----------------------------------------------------------------------

LOGS = "/api/v1/orgs/alpha/runs/{}/logs/"


def _finished_run(orchestrator, owner_user_id, lines: int = 2) -> str:
    request = _request(_runtime(orchestrator, lines=lines), owner_user_id=owner_user_id)
    assert async_to_sync(pipeline.turn_run)(request).status == "succeeded"
    return request.run_id


def test_log_lines_are_stored_with_their_step_and_read_in_pages(world, chat_orchestrator, as_user):
    member = world.alpha.users["member"]
    run_id = _finished_run(chat_orchestrator["fast"], member.pk, lines=3)
    with schema_context("org_alpha"):
        talk = RunEvent.objects.get(run_id=run_id, name="talk").seq
        more = RunEvent.objects.get(run_id=run_id, name="more").seq
    client = as_user(member)

    body = client.get(LOGS.format(run_id)).json()

    assert [(r["step"], r["level"], r["message"]) for r in body["results"]] == [
        (talk, "info", "talk: thinking about the answer"),
        (talk, "warning", "talk: line 0, key sk-[redacted] and [redacted]"),
        (talk, "warning", "talk: line 1, key sk-[redacted] and [redacted]"),
        (more, "error", "more: almost there"),
    ]
    first = body["results"][0]
    assert (first["org"], first["run"], first["logger"], body["next_cursor"]) == (
        "alpha",
        run_id,
        "plugins.example.talk",
        None,
    )
    assert first["worker"] and first["at"].startswith("20")
    assert [
        r["message"][:4] for r in client.get(LOGS.format(run_id) + "?level=error").json()["results"]
    ] == ["more"]
    assert len(client.get(LOGS.format(run_id) + f"?step={talk}").json()["results"]) == 3
    page = client.get(LOGS.format(run_id) + "?limit=3").json()
    after = client.get(LOGS.format(run_id) + f"?limit=3&cursor={page['next_cursor']}").json()
    assert [r["message"] for r in page["results"] + after["results"]] == [
        r["message"] for r in body["results"]
    ]
    assert after["next_cursor"] is None


def test_log_lines_past_the_limit_are_dropped_behind_a_marker(world, chat_orchestrator, settings):
    settings.CADENCE_RUN_LOG_MAX_LINES = 3
    run_id = _finished_run(chat_orchestrator["fast"], world.alpha.users["admin"].pk, lines=5)

    with schema_context("org_alpha"):
        lines = list(RunLog.objects.filter(run_id=run_id).values_list("level", "logger", "message"))

    assert [line[2][:11] for line in lines[:3]] == ["talk: think", "talk: line ", "talk: line "]
    assert lines[3] == (
        "warning",
        "cadence.runlog",
        "Run log limit reached (3 lines): later lines are not kept. 3 lines were dropped.",
    )
    assert len(lines) == 4


def test_the_runs_list_q_finds_runs_by_their_log_lines(world, chat_orchestrator, as_key):
    marker = f"needle-{uuid.uuid4().hex[:8]}"
    request = _request(
        _runtime(chat_orchestrator["fast"], say=f"looking for {marker}"),
        owner_api_key_id=world.alpha.key_ids["member"],
    )
    assert async_to_sync(pipeline.turn_run)(request).status == "succeeded"

    def found(secret: str, text: str) -> list[str]:
        body = as_key(secret).get(f"/api/v1/orgs/alpha/runs/?q={text}").json()
        return [r["id"] for r in body["results"]]

    assert found(world.alpha.keys["member"], marker) == [request.run_id]
    assert found(world.alpha.keys["admin"], marker.upper()) == [request.run_id]
    assert found(world.alpha.keys["admin"], marker + "x") == []
    assert found(world.alpha.keys["viewer"], marker) == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?level=loud", "level"),
        ("?step=-1", "step"),
        ("?step=1.5", "step"),
        ("?cursor=abc", "cursor"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?colour=red", "colour"),
    ],
)
def test_bad_log_filters_are_a_400_naming_the_field(world, stored_runs, as_key, query, field):
    response = as_key(world.alpha.keys["admin"]).get(LOGS.format(stored_runs["member"]) + query)

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == field


def test_logs_follow_the_runs_privacy(world, stored_runs, as_key, as_user, api):
    path = LOGS.format(stored_runs["admin"])

    assert as_key(world.alpha.keys["admin"]).get(path).status_code == 200
    assert as_key(world.alpha.keys["viewer"]).get(path).json()["error"]["code"] == "run_not_found"
    assert as_key(world.bravo.keys["owner"]).get(path).status_code == 404
    api.credentials()
    assert as_user(world.outsider).get(path).status_code == 404
    api.logout()
    assert as_user(world.alpha.users["member"]).get(path).status_code == 404


def test_the_servers_own_log_hides_the_runs_model_key_too(world, chat_orchestrator):
    from cadence_site.requestlog import RedactSecretsFilter

    class Keep(logging.Handler):
        lines: list[str] = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    keep = Keep()
    keep.addFilter(RedactSecretsFilter())
    note_log.addHandler(keep)
    try:
        _finished_run(chat_orchestrator["fast"], world.alpha.users["admin"].pk)
    finally:
        note_log.removeHandler(keep)

    assert keep.lines[1] == "talk: line 0, key sk-[redacted] and [redacted]"
    assert not any(LLM_KEY in line for line in keep.lines)


@pytest.fixture
def temp_admin(world, committed_db):
    from django.contrib.auth import get_user_model

    from tenants.models import Membership

    User = get_user_model()
    User.objects.filter(username="alpha-live-admin").delete()
    user = User.objects.create_user(username="alpha-live-admin", email="live@alpha.test")
    membership = Membership.objects.create(user=user, organization=world.alpha.org, role="admin")
    yield membership
    user.delete()


def _demote(membership) -> None:
    from tenants.models import Membership
    from tenants.services import membership_update

    membership = Membership.objects.select_related("user", "organization").get(pk=membership.pk)
    membership_update(membership=membership, role="member", actor_role="owner")


@pytest.mark.asyncio
async def test_an_admin_watching_another_members_run_is_closed_when_demoted(
    world, chat_orchestrator, temp_admin
):
    gates = [asyncio.Event(), asyncio.Event()]
    owner = {"owner_user_id": world.alpha.users["member"].pk}
    request = _request(_runtime(chat_orchestrator["fast"], gates), **owner)
    task = pipeline.turn_launch(pipeline.turn_run(request))
    await _row_written(request.run_id)
    socket, opened = await _open(f"/ws/orgs/alpha/runs/{request.run_id}/", temp_admin.user)
    assert opened
    await _until(socket, _logged("talk: line 0"))
    await asyncio.sleep(0.2)  # the socket's rights feed is subscribed

    await database_sync_to_async(_demote)(temp_admin)
    _, closed = await _to_the_close(socket, wait=2)

    assert (closed["code"], closed["reason"]) == (4403, "role_required: admin")
    gates[0].set()
    gates[1].set()
    assert (await task).status == "succeeded"


@pytest.mark.parametrize(
    ("fields", "data"),
    [
        ({}, {}),
        ({"parent_seq": 2}, {"inputs": {"a": [1, 2.5, None]}, "outputs": {"b": 'é\n"x"'}}),
        (
            {"outcome": "failed", "error": "boom", "error_type": "ValueError", "stack": "tb"},
            {"inputs": {}, "detail_key": {"x": True}},
        ),
        ({"kind": "llm_call", "cpu_ms": 1.25, "memory_kb": 12}, {"llm": {"model": "m"}, "x": 1}),
        ({"name": "naïve \u2028 step"}, {"outputs": {"n": 10**20, "f": 1e-7}}),
        ({}, {"inputs": {"big": "x" * 20000}}),
    ],
)
def test_step_frames_are_step_fields_as_json(fields, data):
    from engine.runs.export import step_fields
    from engine.runs.frames import iso as _iso
    from engine.runs.frames import step_frame_text
    from engine.runs.recorder import _Step, _truncated

    row = _Step(3, None, "note", "n", 1780000000.123456)
    row.start_cursor, row.end_cursor, row.outcome, row.duration_ms = 7, 9, "completed", 0.5
    row.at = 1780000001.5
    for name, value in fields.items():
        setattr(row, name, value)
    row.data = data

    started, ended = step_frame_text(row, True), step_frame_text(row, False)

    common = {"seq": 3, "parent": row.parent_seq, "name": row.name, "kind": row.kind}
    assert started == (
        7,
        json.dumps(
            {
                "type": "step",
                "cursor": 7,
                **step_fields(
                    **common,
                    status="running",
                    started_at=_iso(row.started_at),
                    finished_at=None,
                    duration_ms=None,
                    data={},
                ),
            }
        ),
    )
    big = len(json.dumps(data, separators=(",", ":"))) > 16 * 1024
    assert ended == (
        9,
        json.dumps(
            {
                "type": "step",
                "cursor": 9,
                **step_fields(
                    **common,
                    status=row.outcome,
                    started_at=_iso(row.started_at),
                    finished_at=_iso(row.at),
                    duration_ms=0.5,
                    data={k: _truncated(v) for k, v in data.items()} if big else data,
                    error=row.error,
                    error_type=row.error_type,
                    stack=row.stack,
                    cpu_ms=row.cpu_ms,
                    memory_kb=row.memory_kb,
                    truncated=big,
                ),
            }
        ),
    )


def test_the_run_socket_reads_each_frames_type_and_cursor_as_json_does():
    """The consumer reads a frame's type and cursor from its text's head, and falls back to
    parsing it whole when the head is not the one every publisher writes."""
    from engine.runs import frames, live
    from engine.runs.consumers import frame_head
    from engine.runs.recorder import _Line, _Step

    row = _Step(3, None, "note", 'a "quoted" name', 1780000000.5)
    row.start_cursor, row.end_cursor, row.outcome, row.duration_ms = 12, 345, "completed", 1.0
    line = _Line(17, 3, "info", "x", "message", 1780000000.7, "w")
    texts = [
        frames.step_frame_text(row, True)[1],
        frames.step_frame_text(row, False)[1],
        frames.line_frame_text(line)[1],
        json.dumps(
            live.run_end_frame(
                cursor=2**31 - 1,
                run_id="r",
                status="failed",
                finished_at=None,
                duration_ms=None,
                error_code="",
            )
        ),
        '{"cursor": 5, "type": "log"}',  # another writer's order: parsed whole
        '{"type":"step","cursor":6}',
    ]
    for text in texts:
        frame = json.loads(text)
        assert frame_head(text) == (frame["type"], frame["cursor"])
    assert [frame_head(text)[1] for text in texts] == [12, 345, 17, 2**31 - 1, 5, 6]


def _finish_row(run_id: str) -> None:
    from django.utils import timezone

    with schema_context("org_alpha"):
        Run.objects.filter(pk=run_id).update(status="failed", finished_at=timezone.now())


@pytest.mark.asyncio
async def test_a_followed_run_that_ends_without_frames_is_replayed_from_the_database(
    world, committed_db, monkeypatch
):
    from engine.runs import consumers

    monkeypatch.setattr(consumers, "QUIET_SECONDS", 0.2)
    member = world.alpha.users["member"]
    run_id = await database_sync_to_async(_run_row)(member.pk, status="running")
    try:
        socket, opened = await _open(f"/ws/orgs/alpha/runs/{run_id}/", member)
        assert opened
        assert await socket.receive_nothing(timeout=0.3) is True

        # Its process died, or Redis lost its last frames: the database has the end.
        await database_sync_to_async(_finish_row)(run_id)
        frames, closed = await _to_the_close(socket, wait=5)

        assert [(f["type"], f["status"]) for f in frames] == [
            ("step", "completed"),
            ("run", "failed"),
        ]
        assert (closed["code"], closed["reason"]) == (1000, "run_ended")
    finally:
        await database_sync_to_async(_run_delete)(run_id)


def _stream_exists(run_id: str) -> bool:
    import redis
    from django.conf import settings

    from engine.runs import live

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return bool(client.exists(live.run_stream_key("org_alpha", run_id)))
    finally:
        client.close()


@pytest.mark.asyncio
async def test_a_run_nobody_watches_publishes_nothing_and_replays_from_its_first_cursor(
    world, chat_orchestrator
):
    member = world.alpha.users["member"]
    request = _request(_runtime(chat_orchestrator["fast"]), owner_user_id=member.pk)

    outcome = await pipeline.turn_run(request)

    assert outcome.status == "succeeded"
    assert _stream_exists(request.run_id) is False
    replayed, closed = await _to_the_close(
        (await _open(f"/ws/orgs/alpha/runs/{request.run_id}/", member))[0]
    )
    assert [f["cursor"] for f in replayed] == list(range(1, len(replayed) + 1))
    # Nothing was sent while it ran: each step is one frame, as it ended.
    assert [f["status"] for f in replayed if f["type"] == "step"] == ["completed"] * 7
    assert [f["type"] for f in replayed].count("log") == 3
    assert (replayed[-1]["type"], closed["code"]) == ("run", 1000)


@pytest.mark.asyncio
async def test_a_socket_whose_run_ends_before_its_watch_is_seen_gets_every_frame(
    world, chat_orchestrator, monkeypatch
):
    from engine.runs import live

    # The publisher never looks in time: the run ends without a frame on its stream.
    monkeypatch.setattr(live, "WATCH_POLL_SECONDS", 60)
    member = world.alpha.users["member"]
    gates = [asyncio.Event(), asyncio.Event()]
    request = _request(_runtime(chat_orchestrator["fast"], gates), owner_user_id=member.pk)
    task = pipeline.turn_launch(pipeline.turn_run(request))
    await _row_written(request.run_id)
    path = f"/ws/orgs/alpha/runs/{request.run_id}/"
    socket, opened = await _open(path, member)
    assert opened
    assert await socket.receive_nothing(timeout=0.3) is True

    gates[0].set()
    gates[1].set()
    outcome = await task
    frames, closed = await _to_the_close(socket, wait=5)

    assert outcome.status == "succeeded"
    assert _stream_exists(request.run_id) is False
    assert [f["cursor"] for f in frames] == list(range(1, len(frames) + 1))
    assert (frames[-1]["type"], closed["code"], closed["reason"]) == ("run", 1000, "run_ended")
    replayed, _ = await _to_the_close((await _open(path, member))[0])
    assert frames == replayed


@pytest.mark.asyncio
async def test_a_run_watched_mid_run_publishes_what_came_before_too(world, chat_orchestrator):
    member = world.alpha.users["member"]
    gates = [asyncio.Event(), asyncio.Event()]
    request = _request(_runtime(chat_orchestrator["fast"], gates), owner_user_id=member.pk)
    task = pipeline.turn_launch(pipeline.turn_run(request))
    await _row_written(request.run_id)
    await asyncio.sleep(0.3)  # prepare_prompt ended and talk logged, unwatched
    assert _stream_exists(request.run_id) is False

    socket, opened = await _open(f"/ws/orgs/alpha/runs/{request.run_id}/?after=0", member)
    assert opened
    seen = await _until(socket, _logged("talk: line 0"))
    assert _stream_exists(request.run_id) is True
    gates[0].set()
    gates[1].set()
    rest, _ = await _to_the_close(socket)
    await task

    live_frames = seen + rest
    assert [f["cursor"] for f in live_frames] == list(range(1, len(live_frames) + 1))
    assert [(f["name"], f["status"]) for f in seen if f["type"] == "step"] == [
        ("prepare_prompt", "completed"),
        ("talk", "running"),
    ]


@pytest.mark.asyncio
async def test_a_run_stored_ended_whose_last_frames_come_late_is_followed_to_them(
    world, committed_db, monkeypatch
):
    """A run's last frames are written once it is stored: a socket that finds it stored while
    they are on their way takes them from the stream rather than replaying the database."""
    from engine.runs import consumers, live

    monkeypatch.setattr(consumers, "QUIET_SECONDS", 0.3)
    monkeypatch.setattr(consumers, "FIRST_LOOK_SECONDS", 0.3)
    member = world.alpha.users["member"]
    run_id = await database_sync_to_async(_run_row)(member.pk, status="running")
    client = live.redis_client()
    key = live.run_stream_key("org_alpha", run_id)
    try:
        socket, opened = await _open(f"/ws/orgs/alpha/runs/{run_id}/", member)
        assert opened
        await database_sync_to_async(_finish_row)(run_id)  # stored `failed` ...
        await asyncio.sleep(0.45)  # ... and seen so by the socket's first quiet check
        end = live.run_end_frame(
            cursor=1,
            run_id=run_id,
            status="succeeded",  # what the stream says, unlike the stored row
            finished_at=None,
            duration_ms=1.0,
            error_code="",
        )
        await client.xadd(key, {"e": json.dumps(end)}, id=live.stream_id(1))

        frames, closed = await _to_the_close(socket, wait=5)

        assert frames == [end]
        assert (closed["code"], closed["reason"]) == (1000, "run_ended")
    finally:
        await client.delete(key)
        await database_sync_to_async(_run_delete)(run_id)


@pytest.mark.asyncio
async def test_a_socket_resuming_inside_an_entry_gets_the_rest_of_it_then_each_whole_entry(
    world, committed_db
):
    """An entry holds several frames (those one send took); a socket after a cursor in the
    middle of one gets that entry's later frames, then every frame of the entries after it,
    in order, and closes on the run frame ending the last."""
    from engine.runs import live

    member = world.alpha.users["member"]
    run_id = await database_sync_to_async(_run_row)(member.pk, status="running")
    client = live.redis_client()
    key = live.run_stream_key("org_alpha", run_id)

    def log(cursor: int) -> dict:
        return {"type": "log", "cursor": cursor, "step": None, "level": "info", "message": "m"}

    end = live.run_end_frame(
        cursor=7,
        run_id=run_id,
        status="succeeded",
        finished_at=None,
        duration_ms=1.0,
        error_code="",
    )
    entries = [[log(1), log(2), log(3), log(4)], [log(5), log(6), end]]
    try:
        for frames in entries:
            text = "\n".join(json.dumps(frame) for frame in frames)
            await client.xadd(key, {"e": text}, id=live.stream_id(frames[-1]["cursor"]))

        socket, opened = await _open(f"/ws/orgs/alpha/runs/{run_id}/?after=2", member)
        assert opened
        frames, closed = await _to_the_close(socket, wait=5)

        assert frames == [log(3), log(4), log(5), log(6), end]
        assert (closed["code"], closed["reason"]) == (1000, "run_ended")
    finally:
        await client.delete(key)
        await database_sync_to_async(_run_delete)(run_id)


@pytest.mark.asyncio
async def test_one_send_writes_every_runs_feed_frames_as_one_entry_the_socket_splits(
    world, chat_orchestrator
):
    """The sender writes an organization's feed frames of one send, every run's, as one entry
    (one frame per line, in the order queued): one XADD per organization and send. The runs
    socket hands each frame on by itself, each still filtered by who may see it."""
    from engine.runs import live

    users = world.alpha.users
    client = live.redis_client()
    key = live.org_runs_stream_key("org_alpha")
    start = (await client.xrevrange(key, count=1) or [(b"0-0", {})])[0][0].decode()
    mine = {"user": users["member"].pk, "key": None}
    theirs = {"user": users["viewer"].pk, "key": None}
    socket, opened = await _open("/ws/orgs/alpha/runs/", users["member"])
    assert opened
    await asyncio.sleep(0.3)  # subscribed to the organization's feed
    publishers = []
    for n, owner in enumerate((mine, theirs, mine)):
        publisher = live.RunPublisher(
            recorder=None, schema_name="org_alpha", run_id=f"run-{n}", owner=owner
        )
        publisher.org_pending.append(
            json.dumps({"type": "run", "id": f"run-{n}", "status": "running", "owner": owner})
        )
        publishers.append(publisher)

    await live._send_all(client, publishers)

    entries = await client.xrange(key, min=f"({start}")
    assert [[json.loads(t)["id"] for t in f[b"e"].decode().split("\n")] for _, f in entries] == [
        ["run-0", "run-1", "run-2"]
    ]
    got = [await socket.receive_json_from(timeout=5) for _ in range(2)]
    assert [f["id"] for f in got] == ["run-0", "run-2"]  # the viewer's run is not the member's
    assert await socket.receive_nothing(timeout=0.3) is True
    await socket.disconnect()


class _Ended:
    """What RunPublisher.close reads of a recorder: no step frames (an unwatched run)."""

    last: list = []

    def take(self) -> list:
        return []


async def _feed_ids(client, key: str, after: str) -> list[str]:
    entries = await client.xrange(key, min=f"({after}")
    return [json.loads(t)["id"] for _, f in entries for t in f[b"e"].decode().split("\n")]


@pytest.mark.asyncio
@pytest.mark.parametrize("lasting", [False, True])
async def test_a_run_end_waits_for_its_frames_only_on_a_loop_that_may_end_with_it(world, lasting):
    """On the server's loop (`serve_lasting`, told by its lifespan) a run's end does not wait
    for its last frames to reach Redis: its reply ends without them, and the loop's sender
    writes them a moment later (`drain` waits for that at shutdown). On any other loop
    (async_to_sync's, a worker's, which may stop once the turn returns) close waits for them."""
    from engine.runs import live

    if lasting:
        live.serve_lasting()
    client = live.redis_client()
    key = live.org_runs_stream_key("org_alpha")
    start = (await client.xrevrange(key, count=1) or [(b"0-0", {})])[0][0].decode()
    run_id = f"run-{uuid.uuid4()}"
    publisher = live.RunPublisher(
        recorder=_Ended(), schema_name="org_alpha", run_id=run_id, owner={"user": 1, "key": None}
    )

    await publisher.close(None, {"type": "run", "id": run_id, "status": "succeeded"})

    published = await _feed_ids(client, key, start)
    assert published == ([] if lasting else [run_id])
    assert await live.drain() is True
    assert await _feed_ids(client, key, start) == [run_id]


def test_a_run_that_ends_after_the_drain_waits_for_its_frames(world, settings):
    """A turn still running when the server stops: asyncio.run cancels it once the lifespan's
    shutdown (and its drain) is done, and it records its end and closes its publisher then. The
    drain ends the loop's lasting mode, so that close waits for the frame as on any other loop,
    and the run's end reaches the organization's feed before the loop is gone."""
    import redis

    from engine.runs import live

    client = redis.Redis.from_url(settings.REDIS_URL)
    key = live.org_runs_stream_key("org_alpha")
    last = client.xrevrange(key, count=1)
    start = last[0][0].decode() if last else "0-0"
    run_id = f"run-{uuid.uuid4()}"

    async def turn():
        publisher = live.RunPublisher(
            recorder=_Ended(), schema_name="org_alpha", run_id=run_id, owner={"user": 1}
        )
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # the run's end written (engine/runs/pipeline.py _finish)
            await publisher.close(None, {"type": "run", "id": run_id, "status": "cancelled"})

    async def server():  # lifespan start, a turn launched, lifespan shutdown, then the exit
        live.serve_lasting()
        asyncio.get_running_loop().create_task(turn())
        await asyncio.sleep(0.05)
        assert await live.drain() is True

    asyncio.run(server())
    entries = client.xrange(key, min=f"({start}")
    ids = [json.loads(t)["id"] for _, f in entries for t in f[b"e"].decode().split("\n")]
    assert run_id in ids
