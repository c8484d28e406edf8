"""Every turn, whatever its trigger, is pinned to its definition snapshot and proven at its end.

A turn-pipeline extension (engine/runs/pipeline.py): the run's row names the snapshot the runtime
was built from (the pool stores it when it builds), and the transaction that records the run's
outcome and steps also writes its execution proof, which the organization's log then takes in. A
proof that cannot be made (a broken key file) is logged and leaves the run recorded without it,
rather than losing the run.

The proof is written in the run's transaction and taken into the log (engine/trust/log.py,
`log_sequence`) after its commit (`after_write`), together with every other proof waiting then.
Appending in the run's transaction held the log's lock, which every run of the organization
needs, from the append to the commit under a busy interpreter: 50 runs ending together held it
38-56 ms each (p50), one after the other, and their answers came over 2-3 s
(benchmarks/run_ingest.py).

- A run written on a thread: sequenced at once. In this process one thread at a time sequences
  an organization; the others wait for it and return at once when a sequencing that began after
  their commit took theirs in.
- A run written by a green call on a server's event loop: within CADENCE_PROOF_SEQUENCE_SECONDS
  (100 ms) of its commit, in one sequencing for every proof committed meanwhile (measured on a
  streamed /v1 load: a sequencing per turn, two statements and two round trips, was ~5% of the
  server's CPU per turn). One at a time per loop and organization, without the lock above (a
  green call that its loop stopped running would keep it); a concurrent sequencing elsewhere is
  the log's own concern (its head's guard: the loser reads again).
- Reading a proof's log entry (proof_in_log) sequences what waits at once, so nobody sees a
  proof without its entry; a tree head's signing (periodic) takes in what a crash left waiting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from types import SimpleNamespace
from typing import Any

from django.db import connection, transaction

from cadence_site import greendb
from cadence_site.pipelined import Guarded
from engine.runs.pipeline import Turn, TurnExtension, TurnOutcome, TurnRequest
from orchestrators.pool import Acquired

logger = logging.getLogger(__name__)


class ProvenRuns(TurnExtension):
    def run_fields(self, request: TurnRequest, acquired: Acquired) -> dict[str, Any]:
        return {"snapshot_id": acquired.snapshot or None}

    def finish_statements(self, turn: Turn, outcome: TurnOutcome) -> list[Guarded]:
        """The proof, written with the run's outcome and steps (one round trip), when the
        recorder holds the rows it covers; otherwise `on_finish` reads them back and writes it."""
        if not _to_prove(turn, outcome):
            return []
        # The rows the transaction writes, as the recorder holds them (no read back).
        try:
            rows = turn.recorder.stored_rows() if turn.recorder is not None else None
        except Exception:
            logger.exception("run rows not taken from its recorder", extra={"run": turn.run_id})
            rows = None
        if rows is None:
            return []
        turn._cadence_proof_sent = True  # type: ignore[attr-defined]
        row = proof_prepared(run_id=turn.run_id, rows=rows)
        if row is None:
            return []
        from engine.trust.proofs import proof_insert

        sql, values = proof_insert(row)

        def done(written: int | None) -> None:
            if written == 1:
                turn._cadence_proven = True  # type: ignore[attr-defined]

        return [Guarded(sql, values, done, what=f"the proof of run {turn.run_id}")]

    def writes_on_finish(self, turn: Turn, outcome: TurnOutcome) -> bool:
        # The proof goes with the run's statements (finish_statements), unless it must be made
        # from the rows read back: then here, in the run's transaction.
        return not getattr(turn, "_cadence_proof_sent", False) and _to_prove(turn, outcome)

    def on_finish(self, turn: Turn, outcome: TurnOutcome) -> None:
        if getattr(turn, "_cadence_proof_sent", False) or not _to_prove(turn, outcome):
            return
        # Read back: the recorder did not write every step of the run (a resumed run).
        row = proof_prepared(run_id=turn.run_id, rows=None)
        if row is not None and _write(row):
            turn._cadence_proven = True  # type: ignore[attr-defined]

    def after_write(self, turn: Turn, outcome: TurnOutcome) -> None:
        if getattr(turn, "_cadence_proven", False):
            sequence_soon(turn.request.schema_name)


def _to_prove(turn: Turn, outcome: TurnOutcome) -> bool:
    if not outcome.recorded:
        return False
    # A queued run that failed may be retried: its worker proves it once it is final
    # (engine/durable/services.queued_run_settle, when it becomes a dead letter).
    return not (turn.request.trigger == "queue" and outcome.status != "succeeded")


_RUN = ("id", "orchestrator_slug", "status", "input", "output", "started_at", "finished_at")
_STEP = (
    "seq", "parent_seq", "kind", "name", "outcome", "started_at", "duration_ms", "data", "error",
    "error_type", "payload", "at",
)  # fmt: skip


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _proof_inputs(run_id: str) -> tuple[Any, str | None, list[dict[str, Any]]]:
    """The run's columns a proof covers, its snapshot, and its step records: two statements
    (rows as the model would load them: JSON parsed, the same adapters)."""
    from engine.models import Run, RunEvent
    from engine.trust.proofs import step_fields

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(_RUN)}, snapshot_id FROM {Run._meta.db_table} WHERE id = %s",
            [run_id],
        )
        row = cursor.fetchone()
        if row is None:
            return None, None, []
        run = SimpleNamespace(**dict(zip(_RUN, row[:-1], strict=True)))
        run.input = _json(run.input)
        cursor.execute(
            f"SELECT {', '.join(_STEP)} FROM {RunEvent._meta.db_table}"
            " WHERE run_id = %s ORDER BY seq",
            [run_id],
        )
        steps = [SimpleNamespace(**dict(zip(_STEP, r, strict=True))) for r in cursor.fetchall()]
    for step in steps:
        step.data = _json(step.data)
    return run, row[-1], [step_fields(step) for step in steps]


def _stored_inputs(rows: tuple[Any, list[Any]]) -> tuple[Any, str | None, list[dict[str, Any]]]:
    """_proof_inputs from the rows the run's recorder wrote in this transaction
    (RunRecorder.stored_rows: as the database gives them back; the tests compare the two)."""
    from engine.trust.proofs import step_fields

    run, steps = rows
    return run, run.snapshot_id, [step_fields(step) for step in steps]


def proof_prepared(*, run_id: str, rows: tuple[Any, list[Any]] | None = None):
    """A finished run's proof row (engine.trust.proofs.proof_prepare), in the current schema;
    None, logged, when it cannot be made. `rows`: the run's row and step rows as just written
    (RunRecorder.stored_rows), else read back."""
    from engine.trust.proofs import proof_prepare

    try:
        run, snapshot_id, records = _stored_inputs(rows) if rows else _proof_inputs(run_id)
    except Exception:
        logger.exception("run not proven", extra={"run": run_id})
        return None
    if run is None or snapshot_id is None:
        logger.warning("run not proven: no snapshot", extra={"run": run_id})
        return None
    try:
        return proof_prepare(run=run, snapshot_hash=snapshot_id, records=records)
    except Exception:
        logger.exception("run not proven", extra={"run": run_id})
        return None


def _append(row: dict[str, Any]):
    """Append a prepared proof inside a savepoint: a failure leaves the run recorded, unproven."""
    from engine.trust.proofs import proof_append

    try:
        with transaction.atomic():
            return proof_append(row)
    except Exception:
        logger.exception("run not proven", extra={"run": str(row["run_id"])})
        return None


def _write(row: dict[str, Any]) -> bool:
    """Write a prepared proof for sequencing inside a savepoint: a failure leaves the run
    recorded, unproven."""
    from engine.trust.proofs import proof_write_guarded

    try:
        return proof_write_guarded(row)
    except Exception:
        logger.exception("run not proven", extra={"run": str(row["run_id"])})
        return False


class _Sequencer:
    """One organization's sequencing in this process: `ended` counts the proofs committed here,
    `covered` how many of them a finished sequencing had seen committed when it began."""

    def __init__(self) -> None:
        self.lock = greendb.GreenLock()  # one sequencing at a time
        self.count_lock = threading.Lock()
        self.ended = 0
        self.covered = 0


_sequencers: dict[str, _Sequencer] = {}
_sequencers_lock = threading.Lock()


def sequence(schema_name: str) -> None:
    """Take the proofs waiting in `schema_name` into its log, after a run's commit (on the
    thread that wrote it); never raises: what fails here waits for the next sequencing."""
    from django_tenants.utils import schema_context

    from engine.trust.log import log_sequence

    with _sequencers_lock:
        sequencer = _sequencers.setdefault(schema_name, _Sequencer())
    with sequencer.count_lock:
        sequencer.ended += 1
        mine = sequencer.ended
    # Inside a caller's transaction (REST invoke, the admin's try-it) the proof is not committed
    # yet: sequence in it, but take nobody else's turn.
    nested = connection.in_atomic_block
    # Held across the log's statements: a GreenLock, so that a green call waits on the loop.
    with sequencer.lock:
        if not nested and sequencer.covered >= mine:
            return  # a sequencing that began after this run's commit took its proof in
        with sequencer.count_lock:
            seen = sequencer.ended
        try:
            # On the connection that wrote the run (the pipeline closes stale connections around
            # the whole write), in its schema already: no SET search_path.
            with schema_context(schema_name):
                log_sequence()
        except Exception:
            logger.exception("proofs not taken into the log", extra={"schema": schema_name})
            return
        if not nested:
            sequencer.covered = max(sequencer.covered, seen)


# Gathered sequencings, per (event loop, schema): one is due, not yet begun.
_due: set[tuple[asyncio.AbstractEventLoop, str]] = set()
_running: set[tuple[asyncio.AbstractEventLoop, str]] = set()
_tasks: set[asyncio.Task] = set()


def sequence_soon(schema_name: str) -> None:
    """`sequence(schema_name)` within CADENCE_PROOF_SEQUENCE_SECONDS, timed by the event loop of
    the green call that wrote the run: every proof committed meanwhile in the organization goes
    in with it (one sequencing, two statements, for a burst of turns rather than one per turn).
    At once when called on a thread (no loop), inside a caller's transaction (the proof is not
    committed yet: sequence() takes it in there), or when the setting is 0. Never raises."""
    delay = _delay()
    loop = greendb.green_loop()
    if delay <= 0 or loop is None or connection.in_atomic_block:
        sequence(schema_name)
        return
    key = (loop, schema_name)
    if key in _due:
        return  # one is due, and begins after this commit: it takes this proof in
    for stale in [k for k in _due if k[0].is_closed()]:  # a loop that ended with one due
        _due.discard(stale)
    _due.add(key)
    # On the loop's thread (a green call runs there): its own call_later, no thread hop.
    loop.call_later(delay, _begin, key)


def _begin(key: tuple[asyncio.AbstractEventLoop, str]) -> None:
    loop, schema_name = key
    if key in _running:  # the last one has not ended: after it
        loop.call_later(_delay(), _begin, key)
        return
    # No longer due from here: a commit after this point asks for the next one.
    _due.discard(key)
    _running.add(key)
    task = asyncio.ensure_future(_sequence_green(schema_name))
    _tasks.add(task)  # held until it ends (the loop keeps weak references)
    task.add_done_callback(_tasks.discard)
    task.add_done_callback(lambda _: _running.discard(key))


def _delay() -> float:
    from django.conf import settings

    return getattr(settings, "CADENCE_PROOF_SEQUENCE_SECONDS", 0.0)


async def _sequence_green(schema_name: str) -> None:
    """In a green call, without the process's sequencer lock (a green call that its loop stopped
    running would keep it, and every later sequencing would wait): one gathered sequencing at a
    time per loop and organization (`_running`), and the log's own guard against a concurrent
    one (log_sequence: the loser reads again)."""
    from django_tenants.utils import schema_context

    from engine.trust.log import log_sequence

    def call() -> None:
        with schema_context(schema_name):
            log_sequence()

    try:
        await greendb.run(call)
    except Exception:  # what fails here waits for the next sequencing
        logger.exception("proofs not taken into the log", extra={"schema": schema_name})


def prove_run(*, run_id: str, rows: tuple[Any, list[Any]] | None = None):
    """Prove a finished run in the current schema (inside the caller's transaction). `rows`:
    the run's row and step rows as just written (RunRecorder.stored_rows), else read back."""
    row = proof_prepared(run_id=run_id, rows=rows)
    return None if row is None else _append(row)


proven_runs = ProvenRuns()
