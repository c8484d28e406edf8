"""Checkpoints: resume a crashed run after its last completed measure.

After every measure a run with ``with_checkpoint(store, run_id)`` saves a :class:`Checkpoint`
(index and name of the last completed measure plus a deep copy of the score's fields). A new run
with the same ``run_id`` restores the score and starts at the next measure. A completed run keeps
a ``completed`` checkpoint, so running it again returns the stored score without re-running any
note (a payment is never charged twice); ``store.delete(run_id)`` starts it afresh.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from typing import Any, Protocol, runtime_checkable

from .score import field_names


@dataclasses.dataclass(slots=True)
class Checkpoint:
    run_id: str
    cadence_name: str
    measure_index: int  # index of the last completed measure; -1 before the first
    measure_name: str | None
    score_state: dict[str, Any]
    completed: bool = False
    updated_at: float = dataclasses.field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(**data)


@runtime_checkable
class CheckpointStore(Protocol):
    """Where checkpoints live. Implement it over Redis, a database or any durable backend."""

    async def save(self, run_id: str, checkpoint: Checkpoint) -> None: ...

    async def load(self, run_id: str) -> Checkpoint | None: ...

    async def delete(self, run_id: str) -> None: ...


class InMemoryCheckpointStore:
    """A process-local store, for tests and single-process use."""

    def __init__(self) -> None:
        self._data: dict[str, Checkpoint] = {}
        # A thread lock, not an asyncio one: nothing awaits while holding it, and the store may be
        # shared by runs on several event loops or threads.
        self._lock = threading.Lock()

    async def save(self, run_id: str, checkpoint: Checkpoint) -> None:
        with self._lock:
            self._data[run_id] = copy.deepcopy(checkpoint)

    async def load(self, run_id: str) -> Checkpoint | None:
        with self._lock:
            found = self._data.get(run_id)
            return copy.deepcopy(found) if found is not None else None

    async def delete(self, run_id: str) -> None:
        with self._lock:
            self._data.pop(run_id, None)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._data

    def __len__(self) -> int:
        return len(self._data)


def capture(score: Any) -> dict[str, Any]:
    return {name: copy.deepcopy(getattr(score, name)) for name in field_names(score)}


def restore(score: Any, state: dict[str, Any]) -> Any:
    """Write a captured state back; returns the (possibly replaced, if frozen) score."""
    from .score import ImmutableScore

    if isinstance(score, ImmutableScore):
        return dataclasses.replace(score, **state)
    for name, value in state.items():
        object.__setattr__(score, name, value)
    return score


__all__ = ["Checkpoint", "CheckpointStore", "InMemoryCheckpointStore", "capture", "restore"]
