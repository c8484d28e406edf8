"""The engine's checkpoint store in the organization's schema (engine.checkpoint.CheckpointStore).

A run with `.with_checkpoint(DatabaseCheckpointStore(schema_name), run_id)` saves after each
measure; a worker that picks the run up after a crash loads it and starts at the next measure.
Queued runs get it through the turn pipeline (`TurnRequest.checkpoints`, engine/durable/
execution.py), which writes each checkpoint with the step records it covers (`write`).
The score state is stored as JSON only when it survives the round trip unchanged: a tuple, a set
or an object would come back as something else and the resumed run would differ from the one
that crashed, so such a state is refused with its field named instead of stored approximately.
"""

from __future__ import annotations

import json
from typing import Any

from engine.checkpoint import Checkpoint
from engine.errors import CadenceError
from tenants.context import in_tenant

_UNSET = object()


def _json_state(checkpoint: Checkpoint) -> dict[str, Any]:
    state = checkpoint.score_state
    for name, value in state.items():
        try:
            back = json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError):
            back = _UNSET
        if back != value or type(back) is not type(value):
            raise CadenceError(
                f"score field {name!r} of run {checkpoint.run_id!r} cannot be checkpointed as JSON "
                f"({type(value).__name__})",
                code="checkpoint_not_json",
            )
    return state


def _save(run_id: str, checkpoint: Checkpoint, steps: int | None = None) -> None:
    from engine.durable.models import RunCheckpoint

    extra = {"steps": steps} if steps is not None else {}
    RunCheckpoint.objects.update_or_create(
        run_id=run_id,
        defaults={
            **extra,
            "cadence_name": checkpoint.cadence_name,
            "measure_index": checkpoint.measure_index,
            "measure_name": checkpoint.measure_name,
            "score_state": _json_state(checkpoint),
            "completed": checkpoint.completed,
            "saved_at": checkpoint.updated_at,
        },
    )


def _load(run_id: str) -> Checkpoint | None:
    from engine.durable.models import RunCheckpoint

    row = RunCheckpoint.objects.filter(run_id=run_id).first()
    if row is None:
        return None
    return Checkpoint(
        run_id=row.run_id,
        cadence_name=row.cadence_name,
        measure_index=row.measure_index,
        measure_name=row.measure_name,
        score_state=row.score_state,
        completed=row.completed,
        updated_at=row.saved_at,
    )


def _delete(run_id: str) -> None:
    from engine.durable.models import RunCheckpoint

    RunCheckpoint.objects.filter(run_id=run_id).delete()


class DatabaseCheckpointStore:
    """Checkpoints of one organization's runs; every call enters the schema itself."""

    def __init__(self, schema_name: str) -> None:
        self.schema_name = schema_name

    def write(self, run_id: str, checkpoint: Checkpoint, *, steps: int) -> None:
        """`save` from synchronous code, inside the caller's transaction: the turn pipeline
        writes a checkpoint with the step records it covers (`steps`: seq 1..steps)."""
        from django_tenants.utils import schema_context

        with schema_context(self.schema_name):
            _save(run_id, checkpoint, steps)

    async def save(self, run_id: str, checkpoint: Checkpoint) -> None:
        await in_tenant(self.schema_name, _save, run_id=run_id, checkpoint=checkpoint)

    async def load(self, run_id: str) -> Checkpoint | None:
        return await in_tenant(self.schema_name, _load, run_id=run_id)

    async def delete(self, run_id: str) -> None:
        await in_tenant(self.schema_name, _delete, run_id=run_id)
