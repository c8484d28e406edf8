"""Every turn, whatever its trigger, is pinned to its definition snapshot and proven at its end.

A turn-pipeline extension (engine/runs/pipeline.py): the run's row names the snapshot the runtime
was built from (the pool stores it when it builds), and the transaction that records the run's
outcome and steps also writes its execution proof and appends it to the organization's log. A
proof that cannot be made (a broken key file) is logged and leaves the run recorded without it,
rather than losing the run.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

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
        prove_run(run_id=turn.run_id)


def prove_run(*, run_id: str):
    """Prove a finished run in the current schema (inside the caller's transaction)."""
    from engine.models import Run
    from engine.trust.proofs import proof_create

    run = Run.objects.filter(pk=run_id).first()
    if run is None or run.snapshot_id is None:
        logger.warning("run not proven: no snapshot", extra={"run": run_id})
        return None
    try:
        with transaction.atomic():
            return proof_create(run=run, snapshot_hash=run.snapshot_id)
    except Exception:
        logger.exception("run not proven", extra={"run": run_id})
        return None


proven_runs = ProvenRuns()
