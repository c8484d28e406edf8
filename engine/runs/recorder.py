"""Recording a run (the Django side of runs): one row when it starts, its steps and outcome when it ends.

Steps are kept in memory while the run streams and written in one batch at the end, so that
recording adds no database round trip per token or step; a crash mid-run leaves the run
`running` with its start time, which is what an operator needs to find it. A durable run
(engine/durable) also writes the steps finished so far with each checkpoint (`flush`), and a run
resumed after a crash keeps them and numbers its new steps after them (`resume`).

A step is built from the runtime's step events: a "started" event carrying an `id` (and its
`parent`'s id) opens it, with its sequence number, so that nesting is exact and a parent's
number is always below its children's; the matching "completed"/"failed" event fills it. Events
without an id (adapters that report only finished steps) make one row each. Tool call and tool
result events make a `tool_call` step unless a step event already covers that call.

A step's data over INLINE_BYTES of JSON is kept whole in file storage
(`runs/<schema>/<run id>/<seq>.json`) and truncated in the row, each large field replaced by
{"truncated": true, "bytes": n, "preview": the first PREVIEW_CHARS characters of its JSON}.

Live: every step start, step end and log line is queued (a list append) for the run's publisher
(engine/runs/live.py: a Redis stream, written off the turn's path, and only once a socket watches
the run: until then nothing is numbered or sent, and `live` is False), which numbers them with
the run's cursor when it sends them (`take`; `seal` numbers what was never sent); each keeps its
cursor in the database, so that an ended run replays as it would have streamed. A step that started and ended between two sends is sent once, ended
(its start frame would tell a watcher nothing the end frame doesn't). Log lines
(engine/runs/runlog.py) are bounded by settings.CADENCE_RUN_LOG_MAX_LINES: past it one warning
line marks the cut, and says at the end how many lines were dropped.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import orjson
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import schema_context

from cadence_site import greendb
from cadence_site.pipelined import Guarded, write_together
from cadence_site.prepared import bound_cursor
from cadence_site.rows import row_insert, row_update
from engine.models import Run, RunEvent, RunLog

INLINE_BYTES = 16 * 1024
PREVIEW_CHARS = 2000
_STEP_FIELDS = ("error_type", "stack", "cpu_ms", "memory_kb")
_JSON_READY = frozenset({"note", "sync", "split", "child", "sequence", "llm_call"})
_DATA_KEYS = ("inputs", "outputs", "reads", "forked", "llm")
_NOT_DATA = frozenset({"id", "parent", "kind", "error", *_STEP_FIELDS})
_HOST = socket.gethostname()
# json.dumps(value, separators=(",", ":"), default=str) without a new encoder per call (json.dumps
# builds one whenever it is given options): a step's data is encoded once per step.
_compact = json.JSONEncoder(separators=(",", ":"), default=str).encode


def _jsonable(value: Any) -> Any:
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def process_environment() -> dict[str, Any]:
    """The process a run ran in; a Celery worker names itself in CADENCE_WORKER_ID."""
    return {"host": _HOST, "pid": os.getpid(), "worker": os.environ.get("CADENCE_WORKER_ID", "")}


def payload_name(schema_name: str, run_id: str, seq: int) -> str:
    return f"runs/{schema_name}/{run_id}/{seq}.json"


class RunRecorder:
    """Use from async code through `start`/`finish` (each enters the schema in its own call)."""

    def __init__(
        self,
        *,
        schema_name: str,
        orchestrator_id: str | None,
        orchestrator_slug: str,
        config_hash: str,
        trigger: str,
        principal: str = "",
        conversation_id: str | None = None,
        input: dict | None = None,
        environment: dict | None = None,
    ) -> None:
        self.schema_name = schema_name
        self.fields = {
            "orchestrator_id": orchestrator_id,
            "orchestrator_slug": orchestrator_slug,
            "config_hash": config_hash,
            "trigger": trigger,
            "principal": principal[:200],
            "conversation_id": conversation_id,
            "input": _jsonable(input or {}),
            "environment": {**(environment or {}), "process": process_environment()},
        }
        # The id is known before the row exists: the row can be written off the streaming path.
        self.fields["id"] = str(uuid.uuid4())
        self.created = False
        self.events: list[_Step] = []
        self.flushed = 0  # events[:flushed] are written (a durable run's checkpoints)
        self.seq_base = 0  # steps a previous attempt of the run wrote (resume)
        self._open: dict[str, _Step] = {}  # step id → its row, while it runs
        self._open_named: dict[str, list[_Step]] = {}  # steps started without an id
        self._tools: dict[str, tuple[_Step, bool]] = {}  # call id → (row, from a step event)
        self.started = time.perf_counter()
        self.duration_ms: float | None = None  # set by seal
        self.started_at: datetime | None = None  # the row's, once written
        # Live: the run's frame cursor, its publisher (engine/runs/live.py; None: not streamed),
        # its log lines and how many were dropped past the limit.
        self.cursor = 0
        self.publisher: Any = None
        self.live = False  # a socket watches: every change kicks the publisher (live.py)
        self.unsent: list[tuple[Any, bool | None]] = []  # (step, started) or (line, None)
        self.last: list[tuple[Any, bool | None]] = []  # what seal numbered, to send at the end
        self.logs: list[_Line] = []
        self.max_logs: int = settings.CADENCE_RUN_LOG_MAX_LINES
        self.logs_dropped = 0
        self.sealed = False
        self.ended: dict[str, Any] = {}
        self.written: dict[str, Any] | None = None  # the outcome `finish` writes (stored_rows)

    @property
    def run_id(self) -> str:
        return str(self.fields["id"])

    def start(self) -> str:
        """The `running` row; optional (finish writes it when start never ran), and never to be
        run concurrently with finish."""
        with schema_context(self.schema_name):
            self._write_row()
        self.created = True
        return self.run_id

    def _write_row(self) -> None:
        if self.fields["trigger"] != Run.Trigger.QUEUE and self.fields["orchestrator_id"]:
            self._insert_with_orchestrator()
            return
        self._add_plugins()
        if self.fields["trigger"] == Run.Trigger.QUEUE:
            # A queued run's row exists from its enqueue (engine/durable): the turn adopts it.
            fields = {k: v for k, v in self.fields.items() if k != "id"}
            if Run.objects.filter(pk=self.run_id, status=Run.Status.QUEUED).update(
                status=Run.Status.RUNNING, **fields
            ):
                self.started_at = (
                    Run.objects.filter(pk=self.run_id).values_list("started_at", flat=True).first()
                )
                return
        # As Run.objects.create(**fields), without building the INSERT per run (cadence_site/rows).
        self.started_at = row_insert(Run(**self.fields)).started_at

    def _insert_with_orchestrator(self) -> None:
        """The row, its team and plugin versions read from the orchestrator's row by the INSERT
        itself (what _add_plugins reads in a statement of its own): one round trip. A LEFT
        JOIN, so the row is written whether or not the orchestrator's is found, as before."""
        fields = self.fields
        environment = fields["environment"]
        own_team, own_plugins = "team_id" in fields, "plugins" in environment
        sql, columns = _run_insert_sql(own_team, own_plugins)
        values, started_at = _run_values(fields, columns)
        values.append(fields["orchestrator_id"])
        with bound_cursor() as cursor:  # prepared: four texts at most (own team, own plugins)
            team_id, plugins = cursor.execute(sql, values).fetchone()
        fields.setdefault("team_id", team_id)
        if not own_plugins:
            environment["plugins"] = plugins if isinstance(plugins, dict) else json.loads(plugins)
        self.started_at = started_at

    def _add_plugins(self) -> None:
        """The plugin versions it runs with, and the orchestrator's team, which the run keeps."""
        environment = self.fields["environment"]
        if not self.fields["orchestrator_id"]:
            return
        if "plugins" in environment and "team_id" in self.fields:
            return
        from orchestrators.models import OrchestratorInstance

        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT plugin_lock, team_id FROM {OrchestratorInstance._meta.db_table}"
                " WHERE id = %s",
                [self.fields["orchestrator_id"]],
            )
            lock, team_id = cursor.fetchone() or ({}, None)
        if isinstance(lock, str):
            lock = json.loads(lock)
        self.fields.setdefault("team_id", team_id)
        if "plugins" in environment:
            return
        lock = lock or {}
        environment["plugins"] = {
            str(pid): pinned.get("version", "") if isinstance(pinned, dict) else str(pinned)
            for pid, pinned in sorted(lock.items())
        }

    def resume(self) -> int:
        """Number new steps after those an earlier attempt of this run already wrote (they are
        kept: a resumed run does not run them again). Call before any event is observed."""
        with schema_context(self.schema_name):
            self.seq_base = (
                RunEvent.objects.filter(run_id=self.run_id)
                .order_by("-seq")
                .values_list("seq", flat=True)
                .first()
            ) or 0
        return self.seq_base

    def flush(self) -> None:
        """Write the finished steps not yet written, in the current schema and transaction (the
        one that saves the run's checkpoint: both or neither survive a crash)."""
        if not self.created:
            self._write_row()
            self.created = True
        end = self.flushed
        while end < len(self.events) and self.events[end].outcome != "running":
            end += 1
        batch = self.events[self.flushed : end]
        self._offload(batch)
        _insert_steps(self.run_id, batch)
        self.flushed = end

    def seq_of(self, step_id: str) -> int | None:
        """The sequence number of an open step, by its step id."""
        row = self._open.get(step_id)
        return row.seq if row is not None else None

    # --- steps --------------------------------------------------------------------------------

    def _next(self) -> int:
        self.cursor += 1
        return self.cursor

    def _opened(self, row: _Step) -> None:
        self.unsent.append((row, True))
        if self.live:
            self.publisher.kick()

    def take(self) -> list[tuple[Any, bool | None]]:
        """What happened since the last call, numbered with the run's cursor, in order; on the
        run's event loop (the publisher's sends and `seal`)."""
        items, self.unsent = self.unsent, []
        taken = []
        for item, started in items:
            if started is True:
                if item.outcome != "running":  # ended already: its end frame says it all
                    continue
                item.start_cursor = self._next()
            elif started is False:
                item.end_cursor = self._next()
            else:
                item.cursor = self._next()
            taken.append((item, started))
        return taken

    def observe(self, event: Any) -> None:
        """A runtime event (orchestrators.runtime); tokens are not steps and are not recorded."""
        kind = getattr(event, "type", "")
        if kind == "step":
            self._step(event)
        elif kind == "log":
            self.log(event.entry)
        elif kind == "tool_call":
            if event.id not in self._tools:
                row = self._new("tool_call", event.name, None)
                row.data = {"inputs": {"arguments": _jsonable(event.arguments)}}
                self._tools[event.id] = (row, False)
                self._opened(row)
        elif kind == "tool_result":
            row, from_step = self._tools.get(event.id, (None, True))
            if row is not None and not from_step:
                row.data["outputs"] = {"result": _jsonable(event.result)}
                self._close(row, "failed" if event.error else "completed", None, event.error or "")

    def _step(self, event: Any) -> None:
        detail = event.detail if isinstance(event.detail, dict) else {}
        step_id = detail.get("id")
        if event.status == "started":
            parent = self._open.get(detail.get("parent") or "")
            row = self._new(detail.get("kind") or "step", event.name, parent)
            if step_id:
                self._open[step_id] = row
            else:
                self._open_named.setdefault(event.name, []).append(row)
            if detail.get("call_id"):
                self._tools[detail["call_id"]] = (row, True)
            self._opened(row)
            return
        row = self._open.pop(step_id, None) if step_id else None
        if row is None and not step_id and self._open_named.get(event.name):
            row = self._open_named[event.name].pop()
        if row is None:
            parent = self._open.get(detail.get("parent") or "")
            row = self._new(detail.get("kind") or "step", event.name, parent)
            if event.duration_ms is not None:
                row.started_at = row.at - event.duration_ms / 1000
        # Engine steps and model calls arrive JSON-ready (engine.tracing made them so): kept as
        # they are, no copy; only what tools and other adapters return is walked again.
        if row.kind in _JSON_READY:
            data = {k: detail[k] for k in _DATA_KEYS if k in detail}
        else:
            data = {k: _jsonable(detail[k]) for k in _DATA_KEYS if k in detail}
        if not data:  # an adapter's own detail (a graph node's, an agent's): kept as it came
            data = {k: _jsonable(v) for k, v in detail.items() if k not in _NOT_DATA}
        row.data = data
        for name in _STEP_FIELDS:
            value = detail.get(name)
            if value is not None:
                setattr(row, name, value)
        error = detail.get("error", "")
        self._close(row, event.status, event.duration_ms, error if isinstance(error, str) else "")

    def _new(self, kind: str, name: str, parent: _Step | None) -> _Step:
        row = _Step(
            self.seq_base + len(self.events) + 1,
            parent.seq if parent is not None else None,
            kind[:16],
            name[:200],
            time.time(),  # epoch seconds while streaming; datetimes only when written
        )
        self.events.append(row)
        return row

    def _close(self, row: _Step, outcome: str, duration_ms: float | None, error: str) -> None:
        row.at = time.time()
        row.outcome = outcome
        row.duration_ms = (
            duration_ms if duration_ms is not None else round((row.at - row.started_at) * 1000, 3)
        )
        row.error = error[:5000]
        self.unsent.append((row, False))
        if self.live:
            self.publisher.kick()

    # --- log lines (engine/runs/runlog.py) ------------------------------------------------------

    def log(self, entry: dict[str, Any]) -> None:
        """A captured log line, in the order it happened; on the run's event loop."""
        if self.sealed:
            return
        if len(self.logs) >= self.max_logs:
            if self.logs_dropped == 0:
                self._line(
                    {
                        "level": "warning",
                        "logger": "cadence.runlog",
                        "message": f"Run log limit reached ({self.max_logs} lines): "
                        "later lines are not kept.",
                        "at": entry.get("at") or time.time(),
                        "worker": entry.get("worker", ""),
                    },
                    None,
                )
            self.logs_dropped += 1
            return
        self._line(entry, self._step_of(entry.get("step_id")))

    def _line(self, entry: dict[str, Any], step: int | None) -> None:
        line = _Line(
            None,
            step,
            entry["level"],
            entry.get("logger", ""),
            entry["message"],
            entry["at"],
            entry.get("worker", ""),
        )
        self.logs.append(line)
        self.unsent.append((line, None))
        if self.live:
            self.publisher.kick()

    def _step_of(self, step_id: str | None) -> int | None:
        """The step a line was logged in: the engine's step when it names one the run opened,
        else the innermost step still running (adapters that report steps without ids)."""
        if step_id:
            row = self._open.get(step_id)
            if row is not None:
                return row.seq
        for row in reversed(self.events[-8:]):
            if row.outcome == "running":
                return row.seq
        return None

    # --- the end ------------------------------------------------------------------------------

    def finish(
        self,
        *,
        status: str,
        output: str = "",
        usage: dict | None = None,
        error: str = "",
        error_code: str = "",
        then: Callable[[], Any] | None = None,
        guarded: Callable[[], list[Guarded]] | None = None,
        then_apart: Callable[[], bool] | None = None,
    ) -> None:
        """The outcome and the steps in one transaction; `then` runs inside it (in the schema), so
        what a caller stores beside the run (a chat reply) is written with it or not at all.
        `guarded`: statements written with the outcome and in its round trip, each of which may
        fail without failing the run's write (cadence_site/pipelined.py), made once the steps
        are final (RunRecorder.stored_rows reads them). `then_apart()`, asked once they are made:
        whether `then` may run after the run's commit rather than in its transaction (it writes
        nothing that must be committed with the run); the transaction is then begun, written
        and committed in one round trip, and `then` runs just after it."""
        if not self.sealed:
            self.seal()
        # What a durable run's checkpoints have not written yet (everything, for other runs).
        pending = self.events[self.flushed :]
        # Files before the transaction: storage writes cannot roll back with it.
        self._offload(pending)
        self.written = {"status": status, "output": output}

        def send() -> None:
            row_update(
                Run,
                self.run_id,
                status=status,
                output=output,
                usage=usage or {},
                error=error[:5000],
                error_code=error_code[:64],
                finished_at=self.ended["finished_at"],
                duration_ms=self.ended["duration_ms"],
            )
            _insert_steps(self.run_id, pending)

        flushed, committed = self.flushed, False
        try:
            with schema_context(self.schema_name), transaction.atomic():
                if not self.created:
                    self._write_row()
                    self.created = True
                # The outcome, the steps and what extensions write with them (the proof, the
                # usage), with the transaction's BEGIN: one round trip (cadence_site/pipelined.py).
                self.flushed = len(self.events)
                statements = guarded() if guarded is not None else []
                # Log lines go with the run, through the ORM: not in a batch that commits.
                apart = not self.logs and (
                    then is None or (then_apart is not None and then_apart())
                )
                committed = write_together(send, statements, commit=apart)
                _insert_logs(self.run_id, self.logs, self.logs_dropped)
                if then is not None:
                    then()  # after the commit when `committed`: in a transaction of its own
        except BaseException:
            if not committed:
                self.flushed = flushed  # the steps were not written: a later write writes them
            raise
        self.ended.update(status=status, error_code=error_code[:64])

    def seal(self) -> None:
        """The end of the run's stream (on its event loop, before `finish` writes it): steps
        still running are interrupted, later log lines are not kept, the end time is fixed."""
        self.sealed = True
        for row in self.events:
            if row.outcome == "running":
                row.outcome = "interrupted"
                row.at = time.time()
                self.unsent.append((row, False))
        self.last = self.take()
        self.ended = {
            "finished_at": timezone.now(),
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 3),
            "cursor": self._next(),
        }
        self.duration_ms = self.ended["duration_ms"]

    def stored_rows(self) -> tuple[Any, list[Any]] | None:
        """The run's row and its step rows (in order) as the database gives them back, once
        `finish` has written them, read from memory: JSON columns as jsonb returns them
        (`stored_json`), times as the timestamp columns keep them, a float column's value as a
        float; the step attributes engine/trust reads of a RunEvent. None when this recorder
        did not write every step of the run (a resumed run's earlier steps), or a text column
        would hold something that is not a string (the database would convert it): read the
        rows back then."""
        if self.written is None or self.started_at is None:
            return None
        if self.seq_base or self.flushed != len(self.events):
            return None
        steps = []
        for row in self.events:
            texts = (row.kind, row.name, row.outcome, row.error, row.error_type, row.payload)
            if row.text is None or any(type(text) is not str for text in texts):
                return None
            steps.append(
                _Stored(
                    seq=row.seq,
                    parent_seq=row.parent_seq,
                    kind=row.kind,
                    name=row.name,
                    outcome=row.outcome,
                    started_at=datetime.fromtimestamp(row.started_at, UTC),
                    duration_ms=None if row.duration_ms is None else float(row.duration_ms),
                    data=stored_json(row.text),
                    error=row.error,
                    error_type=row.error_type,
                    payload=row.payload,
                    at=datetime.fromtimestamp(row.at, UTC),
                )
            )
        fields = self.fields
        snapshot_id = fields.get("snapshot_id")
        if type(fields["orchestrator_slug"]) is not str or type(self.written["output"]) is not str:
            return None
        if snapshot_id is not None and type(snapshot_id) is not str:
            return None
        run = _Stored(
            id=self.run_id,
            orchestrator_slug=fields["orchestrator_slug"],
            status=self.written["status"],
            # As JSONField writes it (json.dumps) and jsonb gives it back.
            input=stored_json(json.dumps(fields["input"])),
            output=self.written["output"],
            started_at=self.started_at,
            finished_at=self.ended["finished_at"],
            snapshot_id=snapshot_id,
        )
        return run, steps

    def _offload(self, rows: list[_Step]) -> None:
        for row in rows:
            # The publisher may have written the data's JSON already (a step's data is final
            # once it ended); the same call either way.
            text = row.json or _compact(row.data)
            if len(text) > INLINE_BYTES:
                name = payload_name(self.schema_name, self.run_id, row.seq)
                # File storage (S3): on a thread when the write is a green call.
                row.payload = greendb.blocking(
                    default_storage.save, name, ContentFile(text.encode())
                )
                row.data = {key: _truncated(value) for key, value in row.data.items()}
                text = _compact(row.data)
            row.text = text


class _Stored(SimpleNamespace):
    """A row as the database gives it back (RunRecorder.stored_rows)."""


def _stored_number(literal: str) -> float | int:
    """A JSON number as a jsonb column gives it back. jsonb keeps numbers as numeric, whose text
    has no exponent, and json reads a number without a fraction as an int: the floats Python
    writes with an exponent and no fraction left (1e+16 and above: 10000000000000000) come back
    as ints, exactly as written in decimal; the others as the same float."""
    if "e" in literal or "E" in literal:
        number = Decimal(literal)
        if number == number.to_integral_value():
            return int(number)
    return float(literal)


# json.loads(text, parse_float=_stored_number) without a new decoder per call (json.loads
# builds one whenever it is given options): every step's data is parsed at every turn's end.
_stored_decode = json.JSONDecoder(parse_float=_stored_number).decode


def stored_json(text: str) -> Any:
    """What a jsonb column holding `text` (JSON as json.dumps writes it) gives back, parsed."""
    return _stored_decode(text)


class _Step:
    """A step while the run streams: a plain object (a model instance per event would cost
    more than the rest of the recording); it becomes a RunEvent when the run is written."""

    __slots__ = (
        "seq",
        "parent_seq",
        "kind",
        "name",
        "outcome",
        "started_at",
        "duration_ms",
        "data",
        "error",
        "error_type",
        "stack",
        "cpu_ms",
        "memory_kb",
        "payload",
        "at",
        "text",  # the data as JSON, once written
        "json",  # the data as JSON, whole, as the publisher made it (None until then)
        "start_cursor",
        "end_cursor",
    )

    def __init__(self, seq: int, parent_seq: int | None, kind: str, name: str, now: float) -> None:
        self.seq, self.parent_seq, self.kind, self.name = seq, parent_seq, kind, name
        self.outcome, self.started_at, self.at = "running", now, now
        self.duration_ms = self.cpu_ms = self.memory_kb = None
        self.data: dict[str, Any] = {}
        self.error = self.error_type = self.stack = self.payload = ""
        self.text: str | None = None
        self.json: str | None = None
        self.start_cursor: int | None = None
        self.end_cursor: int | None = None

    def record(self) -> dict[str, Any]:
        """The step's columns but the run's, for _insert_steps' document: its data as the JSON
        it is already, times as datetimes (their exact microseconds, which the proof signs)."""
        return {
            "seq": self.seq,
            "parent_seq": self.parent_seq,
            "kind": self.kind,
            "name": self.name,
            "outcome": self.outcome,
            "started_at": datetime.fromtimestamp(self.started_at, UTC),
            "duration_ms": self.duration_ms,
            "error": self.error,
            "error_type": self.error_type,
            "stack": self.stack,
            "cpu_ms": self.cpu_ms,
            "memory_kb": self.memory_kb,
            "payload": self.payload,
            "at": datetime.fromtimestamp(self.at, UTC),
            "data": orjson.Fragment(self.text if self.text is not None else _compact(self.data)),
            "start_cursor": self.start_cursor,
            "end_cursor": self.end_cursor,
        }


class _Line:
    """A log line while the run streams; a RunLog row when the run is written."""

    __slots__ = ("cursor", "step", "level", "logger", "message", "at", "worker")

    def __init__(
        self,
        cursor: int | None,
        step: int | None,
        level: str,
        logger: str,
        message: str,
        at,
        worker,
    ) -> None:
        self.cursor, self.step, self.level, self.logger = cursor, step, level, logger
        self.message, self.at, self.worker = message, at, worker


_COLUMNS = (
    "run_id",
    "seq",
    "parent_seq",
    "kind",
    "name",
    "outcome",
    "started_at",
    "duration_ms",
    "error",
    "error_type",
    "stack",
    "cpu_ms",
    "memory_kb",
    "payload",
    "at",
    "data",
    "start_cursor",
    "end_cursor",
)


def _insert_steps(run_id: str, steps: list[_Step]) -> None:
    """The run's steps in one statement: their rows as one JSON document (orjson encodes it in
    C; each step's data is JSON already and goes in as it is) that PostgreSQL takes apart
    (jsonb_to_recordset). Unlike COPY (two round trips, and none in a pipeline), it can go with
    the run's other statements (cadence_site/pipelined.py). An INSERT per step, or a model
    instance per step, would cost more than everything else the recording does
    (benchmarks/runs.py)."""
    if not steps:
        return
    document = orjson.dumps([step.record() for step in steps])
    # Prepared: one text for every run.
    with bound_cursor() as cursor:
        cursor.execute(_steps_sql(), [run_id, document.decode()])


# An orchestrator's plugin_lock ({plugin id: {"version": …, …} or a version}) as the run's
# environment keeps it ({plugin id: version}): what _add_plugins makes of it, in SQL.
_PLUGINS_SQL = (
    "COALESCE((SELECT jsonb_object_agg(p.key, CASE jsonb_typeof(p.value) WHEN 'object'"
    " THEN COALESCE(p.value ->> 'version', '') ELSE p.value #>> '{}' END)"
    " FROM jsonb_each(CASE jsonb_typeof(o.plugin_lock) WHEN 'object' THEN o.plugin_lock"
    " END) AS p), '{}'::jsonb)"
)


_TEXT_FIELDS = frozenset({"CharField", "TextField"})


def _run_values(fields: dict[str, Any], columns: tuple) -> tuple[list[Any], datetime]:
    """The columns' values as `Model.save()` would send them for Run(**fields) (each field's
    default, auto_now_add's time, each value converted by its field), without making the
    instance: one per turn cost more than the conversions. Text given as text goes as it is
    (CharField and TextField convert a str to itself). Fields given by name rather than by
    column (a replay's `replay_of=<Run>`) go through the model."""
    if any(name not in _RUN_ATTNAMES for name in fields):
        instance = Run(**fields)
        values = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in columns]
        return values, instance.started_at
    now = timezone.now()
    values = []
    for f in columns:
        if getattr(f, "auto_now_add", False) or getattr(f, "auto_now", False):
            value = now  # as pre_save sets it on an INSERT, whatever was given
        elif f.attname in fields:
            value = fields[f.attname]
        else:
            value = f.get_default()
        if value is None or (type(value) is str and f.get_internal_type() in _TEXT_FIELDS):
            values.append(value)
        else:
            values.append(f.get_db_prep_save(value, connection))
    return values, now


_RUN_ATTNAMES = frozenset(f.attname for f in Run._meta.concrete_fields)


@functools.cache
def _run_insert_sql(own_team: bool, own_plugins: bool) -> tuple[str, tuple]:
    """INSERT INTO the run table ... SELECT the values, with the team and the plugin versions
    from the orchestrator's row (LEFT JOIN: none when it is gone); its last parameter is the
    orchestrator's id. RETURNING the team and the plugins the row got."""
    from orchestrators.models import OrchestratorInstance

    quote = connection.ops.quote_name
    fields = tuple(f for f in Run._meta.concrete_fields if not f.generated)
    columns, params, selects = [], [], []
    for f in fields:
        columns.append(quote(f.column))
        if f.column == "team_id" and not own_team:
            selects.append("o.team_id")
            continue
        if f.column == "environment" and not own_plugins:
            selects.append(f"%s::jsonb || jsonb_build_object('plugins', {_PLUGINS_SQL})")
        else:
            selects.append("%s")
        params.append(f)
    sql = (
        f"INSERT INTO {quote(Run._meta.db_table)} ({', '.join(columns)})"
        f" SELECT {', '.join(selects)} FROM (SELECT 1) AS one"
        f" LEFT JOIN {quote(OrchestratorInstance._meta.db_table)} AS o ON o.id = %s"
        " RETURNING team_id, environment -> 'plugins'"
    )
    return sql, tuple(params)


@functools.cache
def _steps_sql() -> str:
    # Built once: each `connection.ops` is a lookup of the thread's connection (asgiref Local).
    quote = connection.ops.quote_name
    fields = [
        RunEvent._meta.get_field(c.removesuffix("_id") if c == "run_id" else c) for c in _COLUMNS
    ]
    columns = ", ".join(quote(c) for c in _COLUMNS)
    # The run's id once, as a parameter; the other columns from the document, typed as their
    # columns are (the INSERT checks lengths as it would for any value).
    record = ", ".join(f"{quote(f.column)} {f.db_type(connection)}" for f in fields[1:])
    values = ", ".join(f"r.{quote(c)}" for c in _COLUMNS[1:])
    return (
        f"INSERT INTO {quote(RunEvent._meta.db_table)} ({columns})"
        f" SELECT %s::uuid, {values} FROM jsonb_to_recordset(%s::jsonb) AS r({record})"
    )


def _insert_logs(run_id: str, lines: list[_Line], dropped: int) -> None:
    if not lines:
        return
    if dropped:  # the limit's marker is the last line kept
        lines[-1].message += f" {dropped} lines were dropped."
    RunLog.objects.bulk_create(
        RunLog(
            run_id=run_id,
            cursor=line.cursor,
            step_seq=line.step,
            level=line.level,
            logger=line.logger,
            message=line.message,
            worker=line.worker[:200],
            at=datetime.fromtimestamp(line.at, UTC),
        )
        for line in lines
    )


def _truncated(value: Any) -> Any:
    text = _compact(value)
    if len(text) <= INLINE_BYTES // 4:
        return value
    return {"truncated": True, "bytes": len(text.encode()), "preview": text[:PREVIEW_CHARS]}
