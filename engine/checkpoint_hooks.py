"""``CheckpointHooks``: the library's checkpointing as a plain hook, over a library-protocol store.

``Cadence.with_checkpoint`` does not need it (the runner checkpoints itself, and skips the
measures a resumed run already completed); it is here for code that attaches it by hand: it
restores the last saved state before the run, saves after each successful measure, and clears
the run's checkpoints when the run succeeds.
"""

from __future__ import annotations

from typing import Any

from .checkpoint import restore_score, serialize_score
from .hooks import CadenceHooks


class CheckpointHooks(CadenceHooks):
    def __init__(self, store: Any, run_id: str) -> None:
        self._store = store
        self._run_id = run_id
        self._cadence_name = ""
        self._measure_index = 0
        self._completed: set[str] = set()

    @property
    def completed_measures(self) -> set[str]:
        """Measure names a previous run with this ``run_id`` completed."""
        return self._completed

    @property
    def run_id(self) -> str:
        return self._run_id

    async def before_cadence(self, cadence_name: str, score: Any) -> None:
        self._cadence_name = cadence_name
        self._measure_index = 0
        self._completed = await self._store.get_completed_measures(cadence_name, self._run_id)
        if self._completed:
            state = await self._store.get_last_score_state(cadence_name, self._run_id)
            if state is not None:
                restore_score(score, state)

    async def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        if error is None:
            self._measure_index += 1
            await self._store.save_checkpoint(
                self._cadence_name,
                self._run_id,
                note_name,
                self._measure_index,
                serialize_score(score),
            )

    async def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        if error is None:
            await self._store.clear_checkpoints(cadence_name, self._run_id)


__all__ = ["CheckpointHooks"]
