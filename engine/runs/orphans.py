"""Orphans: runs (and, through registered sources, chat replies) whose process is gone, finished
so that nothing waits on them for ever (issue 8).

Ownership: a run records its owner (engine/runs/owners.py) and a heartbeat when its row is
written, and every PROGRESS_SECONDS after (`RunHeartbeat`, a turn extension: one UPDATE that
also stores the reply so far as the run's output).

Sweep (`orphans_sweep`): at each server's start-up (cadence_site/lifespan.py) and on Celery beat
(`runs.orphans_sweep`). One UNION ALL query per chunk of schemas finds, for every in-flight row
kind, each owner and its oldest heartbeat; an owner whose heartbeat is older than
CADENCE_ORPHAN_SECONDS, or that this host knows to be gone, is an orphan's owner. Only the
schemas holding such rows are entered, and their rows are claimed with a conditional
`UPDATE … WHERE status = <in flight> … RETURNING`: claim-first, idempotent, and two sweepers
never finish the same row twice. Sources registered by other apps (chat's replies) are swept
first in each schema, so a run ends with the same status as its reply (cancelled when a cancel
was asked), and the runs left are finished `failed` with the code `interrupted`.

Queued runs (trigger "queue") are left to engine/durable: a queued run whose worker died is
claimed again through its lease and run again, not finished.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_context

from cadence_site.loops import LoopLocal
from engine.models import Run
from engine.runs import pipeline, runlog
from engine.runs.owners import orphan_after, owner_gone, owner_token

logger = logging.getLogger(__name__)

INTERRUPTED = "interrupted"
INTERRUPTED_MESSAGE = (
    "The server running this turn stopped before it finished; what it produced so far is kept."
)
CANCELLED = "cancelled"
CANCELLED_MESSAGE = "The turn was cancelled before the reply was complete."
_SCHEMA_CHUNK = 200


@dataclass(frozen=True)
class Verdict:
    """Which in-flight rows are orphans: a heartbeat older than `stale_before`, or an owner in `gone`."""

    stale_before: datetime
    gone: tuple[str, ...] = ()


def verdict_for(owners: Iterable[str], *, now: datetime | None = None) -> Verdict:
    now = now or timezone.now()
    return Verdict(
        stale_before=now - orphan_after(),
        gone=tuple(sorted({o for o in owners if o and owner_gone(o)})),
    )


@dataclass(frozen=True)
class Source:
    """A kind of in-flight row: its table's model, the status that means "in flight", the column
    that stands in for a missing heartbeat (rows written before heartbeats existed), an extra SQL
    condition, and `finish(verdict)`, which claims its orphans in the current schema."""

    model: type
    status: str
    since: str
    finish: Callable[[Verdict], int]
    condition: str = ""
    name: str = field(default="")


_sources: list[Source] = []


def source_register(source: Source) -> Source:
    """Swept before runs, in registration order (typically from an AppConfig.ready)."""
    if all(s.name != source.name for s in _sources):
        _sources.append(source)
    return source


# --- runs ---------------------------------------------------------------------------------------


def _finish_runs(where: str, params: list, *, status: str, code: str, message: str) -> list[str]:
    """Claim `running` runs matching `where` (SQL on the run table) and end them; their ids."""
    now = timezone.now()
    table = connection.ops.quote_name(Run._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET status = %s, error = %s, error_code = %s, finished_at = %s, "  # noqa: S608 - fixed names
            "duration_ms = GREATEST(0, EXTRACT(EPOCH FROM (%s - started_at)) * 1000) "
            f"WHERE status = %s AND ({where}) RETURNING id",
            [status, f"{code}: {message}", code, now, now, Run.Status.RUNNING, *params],
        )
        return [str(row[0]) for row in cursor.fetchall()]


def runs_end(*, run_ids: list[str], status: str) -> list[str]:
    """In the tenant's schema: end these runs if they are still running (the runs of orphaned
    replies), `failed` (`interrupted`) or `cancelled`; the ids it ended."""
    if not run_ids:
        return []
    if status == Run.Status.CANCELLED:
        code, message = CANCELLED, CANCELLED_MESSAGE
    else:
        status, code, message = Run.Status.FAILED, INTERRUPTED, INTERRUPTED_MESSAGE
    return _finish_runs(
        "id = ANY(%s::uuid[])", [list(run_ids)], status=status, code=code, message=message
    )


def runs_orphaned_finish(verdict: Verdict) -> int:
    """In the tenant's schema: end every run whose owner is gone, `failed` (`interrupted`)."""
    ended = _finish_runs(
        "trigger <> %s AND (COALESCE(heartbeat_at, started_at) < %s OR owner = ANY(%s))",
        [Run.Trigger.QUEUE, verdict.stale_before, list(verdict.gone)],
        status=Run.Status.FAILED,
        code=INTERRUPTED,
        message=INTERRUPTED_MESSAGE,
    )
    if ended:
        logger.warning(
            "runs whose process is gone were ended as interrupted",
            extra={"schema": connection.schema_name, "count": len(ended)},
        )
    return len(ended)


_RUNS = Source(
    model=Run,
    status=Run.Status.RUNNING,
    since="started_at",
    finish=runs_orphaned_finish,
    condition="trigger <> 'queue'",
    name="runs",
)


# --- the sweep ----------------------------------------------------------------------------------


def _organization_schemas() -> list[str]:
    from tenants.models import Organization

    schemas = list(
        Organization.objects.exclude(
            schema_name__in=[settings.PUBLIC_SCHEMA_NAME, settings.CADENCE_TEMPLATE_SCHEMA]
        )
        .order_by("schema_name")
        .values_list("schema_name", flat=True)
    )
    with connection.cursor() as cursor:  # an organization being deleted may have lost its schema
        cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", [schemas])
        found = {row[0] for row in cursor.fetchall()}
    return [s for s in schemas if s in found]


def _inflight(sources: list[Source], schemas: list[str]) -> dict[str, list[tuple[str, datetime]]]:
    """{schema: [(owner, oldest heartbeat), …]} over every source, in one query per chunk."""
    found: dict[str, list[tuple[str, datetime]]] = {}
    for start in range(0, len(schemas), _SCHEMA_CHUNK):
        parts, params = [], []
        for schema in schemas[start : start + _SCHEMA_CHUNK]:
            for source in sources:
                table = (
                    f"{connection.ops.quote_name(schema)}."
                    f"{connection.ops.quote_name(source.model._meta.db_table)}"
                )
                extra = f" AND {source.condition}" if source.condition else ""
                parts.append(
                    f"SELECT %s, owner, MIN(COALESCE(heartbeat_at, {source.since})) "  # noqa: S608 - fixed names
                    f"FROM {table} WHERE status = %s{extra} GROUP BY owner"
                )
                params.extend([schema, source.status])
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(parts), params)
            for schema, owner, oldest in cursor.fetchall():
                found.setdefault(schema, []).append((owner, oldest))
    return found


def orphans_sweep(*, schemas: list[str] | None = None) -> int:
    """Finish every orphaned reply and run in every organization's schema; how many rows ended."""
    sources = [*_sources, _RUNS]
    with schema_context(settings.PUBLIC_SCHEMA_NAME):
        names = _organization_schemas() if schemas is None else schemas
        if not names:
            return 0
        inflight = _inflight(sources, names)
    ended = 0
    for schema_name, owners in inflight.items():
        verdict = verdict_for(owner for owner, _ in owners)
        if not verdict.gone and all(oldest >= verdict.stale_before for _, oldest in owners):
            continue
        with schema_context(schema_name):
            for source in sources:
                ended += source.finish(verdict)
    return ended


# --- the heartbeat --------------------------------------------------------------------------------


# Beats that come within this long of the first are written with it, in one statement per
# schema: turns pulse every PROGRESS_SECONDS from their own start, and at 50 runs one thread hop
# and one UPDATE each was ~4% of the server's CPU (benchmarks/run_ingest.py). Late by at most
# this much against an orphan threshold of many seconds.
BEAT_GATHER_SECONDS = 0.1


def _beats_write(*, beats: dict[tuple[str, str], str]) -> None:
    """Each run's heartbeat and reply so far, one UPDATE per schema for all its runs."""
    by_schema: dict[str, list[tuple[str, str]]] = {}
    for (schema_name, run_id), text in beats.items():
        by_schema.setdefault(schema_name, []).append((run_id, text))
    table = connection.ops.quote_name(Run._meta.db_table)
    now = timezone.now()
    for schema_name, rows in by_schema.items():
        values = ", ".join(["(%s::uuid, %s)"] * len(rows))
        params: list = [now]
        for run_id, text in rows:
            params += [run_id, text]
        params.append(Run.Status.RUNNING)
        with schema_context(schema_name), connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS run SET heartbeat_at = %s, output = beat.output"  # noqa: S608
                f" FROM (VALUES {values}) AS beat (id, output)"
                " WHERE run.id = beat.id AND run.status = %s",
                params,
            )


class BeatGatherer:
    """One event loop's pending heartbeats of one kind: the first starts a write
    BEAT_GATHER_SECONDS later that takes every beat come meanwhile (the latest of each key),
    and each beat waits for it. `write(beats=...)` is synchronous (run on a pool thread) and
    gets {key: value} for every beat gathered."""

    def __init__(self, write: Callable[..., None]) -> None:
        self.write = write
        self.pending: dict[Any, Any] = {}
        self.written: asyncio.Future | None = None

    async def beat(self, key: Any, value: Any) -> None:
        self.pending[key] = value
        if self.written is None:
            loop = asyncio.get_running_loop()
            self.written = loop.create_future()
            # Its own context: nothing it logs belongs to the run that happened to start it.
            context = contextvars.copy_context()
            context.run(runlog.current_binding.set, None)
            task = loop.create_task(self._write(self.written), context=context)
            _writing.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(_writing.discard)
        # Shielded: one turn cancelled while it waits does not cancel the others' write.
        await asyncio.shield(self.written)

    async def _write(self, written: asyncio.Future) -> None:
        try:
            try:
                await asyncio.sleep(BEAT_GATHER_SECONDS)
            finally:
                beats, self.pending, self.written = self.pending, {}, None
            await pipeline.db_call(partial(self.write, beats=beats))
        except asyncio.CancelledError:  # the loop is going away: so are the turns waiting
            written.cancel()
            raise
        except Exception as exc:  # each turn's heartbeat failed, as one alone would have
            written.set_exception(exc)
            written.exception()  # retrieved: a turn cancelled meanwhile never reads it
        else:
            written.set_result(None)


_writing: set[asyncio.Task] = set()
_loop_beats: LoopLocal[BeatGatherer] = LoopLocal(lambda: BeatGatherer(_beats_write))


def _beats() -> BeatGatherer:
    return _loop_beats.get()


class RunHeartbeat(pipeline.TurnExtension):
    """A run's owner and heartbeat; the reply so far is its output while it runs."""

    def run_fields(self, request, acquired) -> dict:
        return {"owner": owner_token(), "heartbeat_at": timezone.now()}

    async def on_progress(self, turn) -> None:
        if turn.acquired is None:  # never acquired: there is no run row
            return
        if turn.finishing:  # the outcome's write, next, sets the output and ends the row
            return
        await _beats().beat((turn.request.schema_name, turn.run_id), "".join(turn.text))


run_heartbeat = RunHeartbeat()
