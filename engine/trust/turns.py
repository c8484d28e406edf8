"""Every turn, whatever its trigger, is pinned to its definition snapshot and proven at its end.

A turn-pipeline extension (engine/runs/pipeline.py): the run's row names the snapshot the runtime
was built from (the pool stores it when it builds), and the transaction that records the run's
outcome and steps also writes its execution proof and appends it to the organization's log. A
proof that cannot be made (a broken key file) is logged and leaves the run recorded without it,
rather than losing the run.
"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

from django.db import connection, transaction

from engine.runs.pipeline import Turn, TurnExtension, TurnOutcome, TurnRequest
from orchestrators.pool import Acquired

logger = logging.getLogger(__name__)


class ProvenRuns(TurnExtension):
    def run_fields(self, request: TurnRequest, acquired: Acquired) -> dict[str, Any]:
        return {"snapshot_id": acquired.snapshot or None}

    def on_finish(self, turn: Turn, outcome: TurnOutcome) -> None:
        if not outcome.recorded:
            return
        if turn.request.trigger == "queue" and outcome.status != "succeeded":
            # A queued run that failed may be retried: its worker proves it once it is final
            # (engine/durable/services.queued_run_settle, when it becomes a dead letter).
            return
        # The rows the transaction just wrote, as the recorder holds them (no read back), when
        # it wrote them all; read back otherwise.
        try:
            rows = turn.recorder.stored_rows() if turn.recorder is not None else None
        except Exception:
            logger.exception("run rows not taken from its recorder", extra={"run": turn.run_id})
            rows = None
        prove_run(run_id=turn.run_id, rows=rows)


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


def prove_run(*, run_id: str, rows: tuple[Any, list[Any]] | None = None):
    """Prove a finished run in the current schema (inside the caller's transaction). `rows`:
    the run's row and step rows as just written (RunRecorder.stored_rows), else read back."""
    from engine.trust.proofs import proof_create

    try:
        run, snapshot_id, records = _stored_inputs(rows) if rows else _proof_inputs(run_id)
    except Exception:
        logger.exception("run not proven", extra={"run": run_id})
        return None
    if run is None or snapshot_id is None:
        logger.warning("run not proven: no snapshot", extra={"run": run_id})
        return None
    try:
        with transaction.atomic():
            return proof_create(run=run, snapshot_hash=snapshot_id, records=records)
    except Exception:
        logger.exception("run not proven", extra={"run": run_id})
        return None


proven_runs = ProvenRuns()
