"""Runs, live: what a run publishes while it runs, and what its sockets replay once it ended.

Two Redis streams per organization (never channel-layer groups, which drop silently when full):

- `cadence:run:<schema>:<run id>`: the run's frames, step starts and ends, log lines and the
  final run frame, each with the run's cursor (1, 2, 3, …). An entry holds the frames written
  together (one JSON text per line) and its stream id is `0-<its last cursor>`, so a socket
  resumes after any cursor with one XREAD through the process's hub (cadence_site/streams.py),
  skipping the frames of the first entry at or below it. Kept for RUN_STREAM_TTL after the
  run's last frame.
- `cadence:runs:<schema>`: runs starting and ending in the organization, with their owners (for
  the privacy rule; never sent to a client).

A run's frames are written by one task per run (`RunPublisher`), off the turn's path: the
recorder hands it each step or line in order (a list append), and the task builds the frames and
writes every pending one in one pipelined round trip. The database remains the record: a Redis
outage loses liveness, never data (the steps, lines and cursors are stored with the run, and an
ended run is replayed from there with the cursors it streamed with).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import weakref
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings

from cadence_site.aredis import async_redis
from cadence_site.loops import LoopLocal
from engine.models import Run, RunEvent, RunLog
from engine.runs import frames, runlog
from engine.runs.export import run_output, step_fields

logger = logging.getLogger(__name__)
# json.dumps(frame, default=str) without a new encoder per frame (json.dumps builds one whenever
# it is given options).
_frame_json = json.JSONEncoder(default=str).encode

RUN_STREAM_MAXLEN = 50_000
RUN_STREAM_TTL = 3600
ORG_STREAM_MAXLEN = 5_000
CLOSE_SECONDS = 2.0  # how long a run's end waits for its last frames to reach Redis (on a loop
# that may end with the turn: the server's does not wait, see serve_lasting), and a server's
# shutdown for what its sender still holds (drain)
TERMINAL = frozenset({Run.Status.SUCCEEDED, Run.Status.FAILED, Run.Status.CANCELLED})
# A run socket marks its run watched (`run_watch_mark`) for WATCH_TTL seconds, again every
# WATCH_REFRESH seconds while it stays open; each event loop's sender looks for the marks of its
# unwatched runs every WATCH_POLL_SECONDS (one MGET for all of them).
WATCH_TTL = 60
WATCH_REFRESH = 20
WATCH_POLL_SECONDS = 0.25  # each look is a round trip per loop, whatever its runs
# The sender, woken by a run's change, waits this long before it takes what is pending: the
# steps of a burst (a model call's end, the instant notes after it, the next call's start) then
# share one entry and one round trip instead of one each, and their sockets one read and one
# write. Frames arrive at most this much later (the target is a p95 of 250 ms).
SEND_GATHER_SECONDS = 0.005


def run_stream_key(schema_name: str, run_id: str) -> str:
    return f"cadence:run:{schema_name}:{run_id}"


def org_runs_stream_key(schema_name: str) -> str:
    return f"cadence:runs:{schema_name}"


def run_watch_key(schema_name: str, run_id: str) -> str:
    return f"cadence:run-watch:{schema_name}:{run_id}"


def stream_id(cursor: int) -> str:
    return f"0-{cursor}"


# Connections belong to the loop that opened them; many runs publish at once.
_clients: LoopLocal[aioredis.Redis] = LoopLocal(
    lambda: async_redis(
        settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5, max_connections=2000
    )
)


def redis_client() -> aioredis.Redis:
    return _clients.get()


async def run_watch_mark(schema_name: str, run_id: str) -> None:
    """A socket watches the run: its frames go to its stream from now on, those before included
    (see RunPublisher). Set before the socket reads whether the run ended: a run it finds
    running either sees the mark in time and publishes everything, or is written by the time
    the socket looks at the database again."""
    await redis_client().set(run_watch_key(schema_name, run_id), b"1", ex=WATCH_TTL)


# Append an entry with the given id and keep the stream an hour past its latest entry.
_APPEND = """
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], ARGV[1], 'e', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


# --- frames -----------------------------------------------------------------------------------


def run_end_frame(*, cursor: int, run_id: str, status: str, finished_at, duration_ms, error_code):
    return {
        "type": "run",
        "cursor": cursor,
        "id": run_id,
        "status": status,
        "finished_at": finished_at.isoformat() if finished_at is not None else None,
        "duration_ms": duration_ms,
        "error_code": error_code,
    }


def org_run_frame(run: Run) -> dict[str, Any]:
    """The organization socket's frame for a run (its REST object's first fields)."""
    out = run_output(run)
    return {
        "type": "run",
        "id": out["id"],
        "status": out["status"],
        "orchestrator": out["orchestrator"],
        "trigger": out["trigger"],
        "started_at": out["started_at"],
        "finished_at": out["finished_at"],
        "duration_ms": out["duration_ms"],
        "error_code": run.error_code,
    }


def recorder_org_frame(recorder: Any) -> dict[str, Any]:
    """The organization socket's frame for a run in flight or just written (its recorder)."""
    fields, ended = recorder.fields, recorder.ended
    orchestrator = fields["orchestrator_id"]
    return {
        "type": "run",
        "id": recorder.run_id,
        "status": ended.get("status", Run.Status.RUNNING),
        "orchestrator": {
            "id": str(orchestrator) if orchestrator else None,
            "slug": fields["orchestrator_slug"],
        },
        "trigger": fields["trigger"],
        "started_at": _iso(recorder.started_at),
        "finished_at": _iso(ended.get("finished_at")) if "status" in ended else None,
        "duration_ms": ended.get("duration_ms") if "status" in ended else None,
        "error_code": ended.get("error_code", ""),
    }


def recorder_end_frame(recorder: Any) -> dict[str, Any]:
    ended = recorder.ended
    return run_end_frame(
        cursor=ended["cursor"],
        run_id=recorder.run_id,
        status=ended["status"],
        finished_at=ended["finished_at"],
        duration_ms=ended["duration_ms"],
        error_code=ended["error_code"],
    )


def log_frame(line: RunLog) -> dict[str, Any]:
    return {
        "type": "log",
        "cursor": line.cursor,
        "step": line.step_seq,
        "level": line.level,
        "message": line.message,
        "at": line.at.isoformat(),
        "logger": line.logger,
        "worker": line.worker,
    }


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def replay_frames(*, run: Run, after: int) -> list[dict[str, Any]]:
    """An ended run's frames after cursor `after`, as it streamed them: each step's start and
    end, its log lines, then the run frame. In the tenant's schema.

    Runs recorded before steps kept their cursors get them in step order, then their lines."""
    steps = list(run.events.order_by("seq"))
    lines = list(RunLog.objects.filter(run=run).order_by("cursor"))
    frames: list[dict[str, Any]] = []
    legacy = 0
    if any(step.end_cursor is None for step in steps):
        legacy = max((s.end_cursor or s.start_cursor or 0 for s in steps), default=0)
        legacy = max(legacy, max((line.cursor for line in lines), default=0))
    for step in steps:
        if step.start_cursor is not None:
            frames.append(
                {
                    "type": "step",
                    "cursor": step.start_cursor,
                    **step_fields(
                        seq=step.seq,
                        parent=step.parent_seq,
                        name=step.name,
                        kind=step.kind,
                        status="running",
                        started_at=_iso(step.started_at),
                        finished_at=None,
                        duration_ms=None,
                        data={},
                    ),
                }
            )
        end = step.end_cursor
        if end is None:
            legacy += 1
            end = legacy
        frames.append({"type": "step", "cursor": end, **_ended(step)})
    frames.extend(log_frame(line) for line in lines)
    last = max((frame["cursor"] for frame in frames), default=0)
    frames.append(
        run_end_frame(
            cursor=last + 1,
            run_id=str(run.id),
            status=run.status,
            finished_at=run.finished_at,
            duration_ms=run.duration_ms,
            error_code=run.error_code,
        )
    )
    frames.sort(key=lambda frame: frame["cursor"])
    return [frame for frame in frames if frame["cursor"] > after]


def _ended(step: RunEvent) -> dict[str, Any]:
    from engine.runs.export import step_output

    return step_output(step)


# --- publishing -------------------------------------------------------------------------------


class RunPublisher:
    """One run's frames to Redis, in cursor order, sent by its event loop's sender task.

    Only while a socket watches the run (`run_watch_mark`): most runs are never watched, and
    building and writing frames was most of what recording cost a step (benchmarks/runs.py).
    Until then the recorder only queues what happens (a list append) and nothing is numbered;
    the loop's sender looks for the marks of its running unwatched runs every
    WATCH_POLL_SECONDS (one MGET for all), and once it finds one (`watch`) that run is published
    for the rest of its life: the first send takes everything queued since the run began
    (`RunRecorder.take` numbers it, from cursor 1), and from then on the recorder calls `kick`
    (on the loop's thread) for each change and each send writes what was queued since as one
    stream entry. A socket that connects mid-run thus reads every frame from the run's stream,
    those from before it connected included. A run that ends before its mark is seen publishes
    nothing: its socket, which marked it before reading that it was running, finds it ended in
    the database soon after (engine/runs/consumers.py looks again shortly while no frame came)
    and replays it from there, with the cursors it was stored with.

    `org` queues a frame for the organization's feed (always sent). `close` (after the run is
    written) sends what `seal` numbered and the run frame if the run is watched, and waits at
    most CLOSE_SECONDS for what it sends to be written."""

    __slots__ = (
        "recorder",
        "key",
        "watch_key",
        "org_key",
        "owner",
        "final",
        "org_pending",
        "closed",
        "queued",
        "watched",
        "__weakref__",
    )

    def __init__(self, *, recorder: Any, schema_name: str, run_id: str, owner: dict) -> None:
        self.recorder = recorder
        self.key = run_stream_key(schema_name, run_id)
        self.watch_key = run_watch_key(schema_name, run_id)
        self.org_key = org_runs_stream_key(schema_name)
        self.owner = owner
        self.final: list[tuple] | None = None  # set by close: the last frames
        self.org_pending: list[str] = []
        self.closed: asyncio.Future | None = None
        self.queued = False  # already waiting for the sender
        self.watched = False
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # made outside a loop: looked for at close only
            return
        _sender().poll(self)

    def watch(self) -> None:
        """A socket watches: publish what happened so far and, from now on, every change."""
        if self.watched:
            return
        self.watched = True
        self.recorder.live = True
        self.kick()

    def kick(self) -> None:
        if not self.queued:
            self.queued = True
            _sender().want(self)

    def org(self, frame: dict[str, Any]) -> None:
        self.org_pending.append(json.dumps({**frame, "owner": self.owner}, default=str))
        self.kick()

    async def close(self, final: dict[str, Any] | None, org_frame: dict[str, Any] | None) -> None:
        self.final = list(self.recorder.last)
        if final is not None:
            self.final.append((final, "final"))
        if org_frame is not None:
            self.org_pending.append(json.dumps({**org_frame, "owner": self.owner}, default=str))
        if not self.watched and not self.org_pending:
            return  # a socket that came too late for the poller replays it from the database
        if _sender().lasting:
            # The server's loop: its sender writes them within SEND_GATHER_SECONDS, and the
            # turn does not wait (its reply's end waited 5 ms and a round trip for it; a
            # Redis that does not answer held every turn's end for CLOSE_SECONDS).
            self.kick()
            return
        # A loop that may end with the turn (async_to_sync's, a worker's): sent before it does.
        self.closed = asyncio.get_running_loop().create_future()
        self.kick()
        try:
            # The sender sets the result whether or not Redis took the frames.
            async with asyncio.timeout(CLOSE_SECONDS):
                await self.closed
        except TimeoutError:
            logger.warning("run frames not all published in time", extra={"stream": self.key})

    @staticmethod
    def _frames(batch: list[tuple]) -> list[tuple[int, str]]:
        out = []
        for item, how in batch:
            if how == "final":
                out.append((item["cursor"], _frame_json(item)))
            elif how is None:
                out.append(frames.line_frame_text(item))
            else:
                out.append(frames.step_frame_text(item, how))
        return out

    def _take(self) -> tuple[tuple[str, str] | None, list[str], bool]:
        """What to write now: (the stream entry's id and text, or None; the organization feed's
        frames; whether this send ends the run's stream)."""
        self.queued = False
        ending = self.closed is not None  # (a send already under way when close came is not)
        batch: list[tuple] = []
        if self.watched:
            batch = self.recorder.take()
            if self.final is not None:  # closed: what seal numbered, and the run frame
                batch, self.final = batch + self.final, None
        org, self.org_pending = self.org_pending, []
        entry = None
        if batch:
            frames = self._frames(batch)
            # One entry per send, its id the last cursor in it: a reader after cursor c gets
            # exactly the entries holding a frame above c (and skips the rest of the first).
            entry = (stream_id(frames[-1][0]), "\n".join(text for _, text in frames))
        return entry, org, ending

    def _sent(self, ending: bool) -> None:
        # close() waits for this whether or not Redis took the frames.
        if ending and self.closed is not None and not self.closed.done():
            self.closed.set_result(None)

    async def send(self, client: aioredis.Redis) -> None:
        await _send_all(client, [self])


async def _send_all(client: aioredis.Redis, publishers: list[RunPublisher]) -> None:
    """Every wanted run's pending frames in one pipelined round trip: one command per run's
    entry (entry and expiry in one script) and one per organization frame. Per command
    redis-py costs more CPU than the frames do to build (benchmarks/runs.py), and per round
    trip more again (a pooled connection taken and given back, a read awaited): at 50 runs
    streaming at once a round trip per run was most of what publishing cost the server
    (benchmarks/run_ingest.py). EVAL rather than EVALSHA: a pipeline cannot answer NOSCRIPT
    midway, and Redis caches the script by its hash all the same."""
    work = []
    try:
        for publisher in publishers:
            try:
                work.append((publisher, *publisher._take()))
            except Exception as exc:  # its frames are stored with the run all the same
                _not_published(publisher, exc)
                publisher._sent(True)
        commands: list[list[RunPublisher]] = []  # each command's runs
        # Each organization's feed frames of this send, every run's, as one entry (one frame
        # per line: JSON text holds no raw newline), in the order they were queued.
        feeds: dict[str, tuple[list[str], list[RunPublisher]]] = {}
        async with client.pipeline(transaction=False) as pipe:
            for publisher, entry, org, _ in work:
                if entry is not None:
                    pipe.eval(_APPEND, 1, publisher.key, *entry, RUN_STREAM_MAXLEN, RUN_STREAM_TTL)
                    commands.append([publisher])
                if org:
                    texts, runs = feeds.setdefault(publisher.org_key, ([], []))
                    texts.extend(org)
                    runs.append(publisher)
            for key, (texts, runs) in feeds.items():
                pipe.xadd(key, {"e": "\n".join(texts)}, maxlen=ORG_STREAM_MAXLEN)
                commands.append(runs)
            if not commands:
                return
            try:
                results = await pipe.execute(raise_on_error=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # stored with the run all the same
                for publisher in dict.fromkeys(p for runs in commands for p in runs):
                    _not_published(publisher, exc)
                return
        failed: dict[RunPublisher, BaseException] = {}
        for runs, result in zip(commands, results, strict=True):
            if isinstance(result, BaseException):
                for publisher in runs:
                    failed.setdefault(publisher, result)
        for publisher, exc in failed.items():
            _not_published(publisher, exc)
    finally:
        for publisher, _, _, ending in work:
            publisher._sent(ending)


def _not_published(publisher: RunPublisher, exc: BaseException) -> None:
    logger.warning(
        "run frames not published",
        extra={"stream": publisher.key, "error": f"{type(exc).__name__}: {exc}"},
    )


class _Sender:
    """One task per event loop sends every run's pending frames: no task per run. `lasting`:
    the loop serves for the process's life (`serve_lasting`)."""

    def __init__(self) -> None:
        self.lasting = False
        self.sending = False
        self.wanted: dict[RunPublisher, None] = {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        # Runs of this loop no socket watches yet (weak: a run dropped unclosed is forgotten).
        self.unwatched: weakref.WeakSet[RunPublisher] = weakref.WeakSet()
        self.poller: asyncio.Task | None = None

    @staticmethod
    def _task(coro) -> asyncio.Task:
        # Its own context: nothing the sender logs belongs to a run's log.
        context = contextvars.copy_context()
        context.run(runlog.current_binding.set, None)
        return asyncio.get_running_loop().create_task(coro, context=context)

    def want(self, publisher: RunPublisher) -> None:
        self.wanted[publisher] = None
        self.wake.set()
        if self.task is None or self.task.done():
            self.task = self._task(self._run())

    async def _run(self) -> None:
        client = redis_client()
        while True:
            await self.wake.wait()
            await asyncio.sleep(SEND_GATHER_SECONDS)
            self.wake.clear()
            wanted, self.wanted = self.wanted, {}
            self.sending = True
            try:
                await _send_all(client, list(wanted))
            finally:
                self.sending = False

    def poll(self, publisher: RunPublisher) -> None:
        self.unwatched.add(publisher)
        if self.poller is None or self.poller.done():
            self.poller = self._task(self._poll())

    async def _poll(self) -> None:
        """Look for the watch marks of this loop's running unwatched runs, in one MGET."""
        client = redis_client()
        while self.unwatched:
            await asyncio.sleep(WATCH_POLL_SECONDS)
            publishers = []
            for publisher in list(self.unwatched):
                if publisher.watched or publisher.final is not None:  # watched, or ended
                    self.unwatched.discard(publisher)
                else:
                    publishers.append(publisher)
            if not publishers:
                continue
            try:
                marks = await client.mget([publisher.watch_key for publisher in publishers])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: frames could not be published anyway
                logger.debug("run watch marks not read", extra={"error": str(exc)})
                continue
            for publisher, mark in zip(publishers, marks, strict=True):
                if mark is not None:
                    self.unwatched.discard(publisher)
                    publisher.watch()


_senders: LoopLocal[_Sender] = LoopLocal(lambda: _Sender())


def _sender() -> _Sender:
    return _senders.get()


def serve_lasting() -> None:
    """The running loop serves for the process's life (a server's, told by its lifespan): a run
    that ends on it does not wait for its last frames to reach Redis (RunPublisher.close). Call
    `drain` before the loop stops."""
    _sender().lasting = True


async def drain() -> bool:
    """Wait, at most CLOSE_SECONDS, until the running loop's sender holds nothing more to send
    (a server's shutdown: the last runs' ends reach Redis); True when it does not. The loop is
    no longer lasting from here on: a run that ends after this (a turn cancelled as the loop
    stops) waits for its frames, as on any loop that may end with it."""
    sender = _sender()
    sender.lasting = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_SECONDS
    while (sender.wanted or sender.sending) and sender.task is not None:
        if sender.task.done() or loop.time() >= deadline:
            break
        await asyncio.sleep(SEND_GATHER_SECONDS)
    return not (sender.wanted or sender.sending)
