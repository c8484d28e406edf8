"""Checkpoints: resume a crashed run after its last completed measure.

After every measure a run with ``with_checkpoint(store, run_id)`` saves a :class:`Checkpoint`
(index and name of the last completed measure plus a deep copy of the score's fields). A new run
with the same ``run_id`` restores the score and starts at the next measure. A completed run keeps
a ``completed`` checkpoint, so running it again returns the stored score without re-running any
note (a payment is never charged twice); ``store.delete(run_id)`` starts it afresh.

Two store protocols are accepted (``CheckpointStore`` matches either): the engine's
(:class:`EngineCheckpointStore`: ``save``/``load``/``delete`` of a whole checkpoint per run) and
the published library's (:class:`LibraryCheckpointStore`: ``save_checkpoint``,
``get_completed_measures``, ``get_last_score_state``, ``clear_checkpoints``), which runs drive with
the library's semantics: the score saved with ``serialize_score``, completed measures skipped on
resume, checkpoints cleared when the run completes. ``InMemoryCheckpointStore`` speaks both.
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
class EngineCheckpointStore(Protocol):
    """The engine's store: one checkpoint per run. Implement it over Redis, a database or any
    durable backend; ``save`` must replace the run's checkpoint atomically."""

    async def save(self, run_id: str, checkpoint: Checkpoint) -> None: ...

    async def load(self, run_id: str) -> Checkpoint | None: ...

    async def delete(self, run_id: str) -> None: ...


@runtime_checkable
class LibraryCheckpointStore(Protocol):
    """The published library's store protocol (``save_checkpoint`` must be atomic)."""

    async def save_checkpoint(
        self,
        cadence_name: str,
        run_id: str,
        measure_name: str,
        measure_index: int,
        score_state: dict[str, Any],
    ) -> None: ...

    async def get_completed_measures(self, cadence_name: str, run_id: str) -> set[str]: ...

    async def get_last_score_state(
        self, cadence_name: str, run_id: str
    ) -> dict[str, Any] | None: ...

    async def clear_checkpoints(self, cadence_name: str, run_id: str) -> None: ...


class _EitherStore(type):
    def __instancecheck__(cls, obj: object) -> bool:
        if type.__instancecheck__(cls, obj):
            return True
        return isinstance(obj, (EngineCheckpointStore, LibraryCheckpointStore))


class CheckpointStore(metaclass=_EitherStore):
    """Either store protocol: ``isinstance(store, CheckpointStore)`` is True for an object with
    the engine's methods or the library's. Subclassing it is optional."""


class InMemoryCheckpointStore:
    """A process-local store, for tests and single-process use. Speaks both protocols; runs use
    the engine's, and the library's methods see those runs too (a completed run's
    measures are cleared from that view, as the library clears them)."""

    def __init__(self) -> None:
        self._data: dict[str, Checkpoint] = {}
        self._by_measure: dict[str, dict[str, Any]] = {}
        # A thread lock, not an asyncio one: nothing awaits while holding it, and the store may be
        # shared by runs on several event loops or threads.
        self._lock = threading.Lock()

    async def save(self, run_id: str, checkpoint: Checkpoint) -> None:
        with self._lock:
            self._data[run_id] = copy.deepcopy(checkpoint)
            key = f"{checkpoint.cadence_name}:{run_id}"
            if checkpoint.completed:
                self._by_measure.pop(key, None)
            elif checkpoint.measure_name is not None:
                self._record(
                    key,
                    checkpoint.measure_name,
                    checkpoint.measure_index + 1,
                    checkpoint.score_state,
                )

    def _record(self, key: str, measure: str, index: int, state: dict[str, Any]) -> None:
        entry = self._by_measure.setdefault(key, {"completed": set(), "last_score": None})
        entry["completed"].add(measure)
        entry["last_score"] = copy.deepcopy(state)
        entry["last_index"] = index

    # -- the library's protocol ---------------------------------------------------------

    async def save_checkpoint(
        self,
        cadence_name: str,
        run_id: str,
        measure_name: str,
        measure_index: int,
        score_state: dict[str, Any],
    ) -> None:
        with self._lock:
            self._record(f"{cadence_name}:{run_id}", measure_name, measure_index, score_state)

    async def get_completed_measures(self, cadence_name: str, run_id: str) -> set[str]:
        with self._lock:
            entry = self._by_measure.get(f"{cadence_name}:{run_id}")
            return set(entry["completed"]) if entry else set()

    async def get_last_score_state(self, cadence_name: str, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._by_measure.get(f"{cadence_name}:{run_id}")
            return copy.deepcopy(entry["last_score"]) if entry else None

    async def clear_checkpoints(self, cadence_name: str, run_id: str) -> None:
        with self._lock:
            self._by_measure.pop(f"{cadence_name}:{run_id}", None)
            found = self._data.get(run_id)
            if found is not None and found.cadence_name == cadence_name:
                del self._data[run_id]

    async def load(self, run_id: str) -> Checkpoint | None:
        with self._lock:
            found = self._data.get(run_id)
            return copy.deepcopy(found) if found is not None else None

    async def delete(self, run_id: str) -> None:
        with self._lock:
            found = self._data.pop(run_id, None)
            if found is not None:
                self._by_measure.pop(f"{found.cadence_name}:{run_id}", None)

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


def serialize_score(score: Any) -> dict[str, Any]:
    """The score as a dict for a checkpoint, as the library makes it: ``dataclasses.asdict``
    for dataclasses (nested dataclasses become dicts), else a deep copy of public attributes."""
    if dataclasses.is_dataclass(score) and not isinstance(score, type):
        return dataclasses.asdict(score)
    return {k: copy.deepcopy(v) for k, v in vars(score).items() if not k.startswith("_")}


def restore_score(score: Any, state: dict[str, Any]) -> None:
    """Write a checkpoint's state onto ``score`` in place (``object.__setattr__``, so frozen
    dataclasses too); private names are skipped."""
    for key, value in state.items():
        if not key.startswith("_"):
            object.__setattr__(score, key, value)


class LibraryStoreAdapter:
    """Drives a :class:`LibraryCheckpointStore` from a run, with the library's semantics."""

    def __init__(self, store: Any, cadence: Any) -> None:
        self.store = store
        self.cadence = cadence

    capture = staticmethod(serialize_score)

    async def load(self, run_id: str) -> Checkpoint | None:
        name = self.cadence.name
        done = await self.store.get_completed_measures(name, run_id)
        if not done:
            return None
        state = await self.store.get_last_score_state(name, run_id)
        measures = self.cadence._measures
        index = max((i for i, m in enumerate(measures) if m.name in done), default=-1)
        last = measures[index].name if index >= 0 else None
        return Checkpoint(run_id, name, index, last, dict(state or {}))

    async def save(self, run_id: str, checkpoint: Checkpoint) -> None:
        name = self.cadence.name
        if checkpoint.completed:
            await self.store.clear_checkpoints(name, run_id)
        else:
            await self.store.save_checkpoint(
                name,
                run_id,
                checkpoint.measure_name,
                checkpoint.measure_index + 1,
                checkpoint.score_state,
            )


def as_engine_store(store: Any, cadence: Any) -> Any:
    """The store as the runner drives it (engine protocol), adapting a library-protocol one."""
    if callable(getattr(store, "load", None)) and callable(getattr(store, "save", None)):
        return store
    if isinstance(store, LibraryCheckpointStore):
        return LibraryStoreAdapter(store, cadence)
    raise TypeError(
        f"{type(store).__name__} is not a checkpoint store: it needs save/load/delete or "
        "save_checkpoint/get_completed_measures/get_last_score_state/clear_checkpoints"
    )


from .checkpoint_hooks import CheckpointHooks  # noqa: E402 - a hook over the functions above

__all__ = [
    "Checkpoint",
    "CheckpointHooks",
    "CheckpointStore",
    "EngineCheckpointStore",
    "InMemoryCheckpointStore",
    "LibraryCheckpointStore",
    "LibraryStoreAdapter",
    "as_engine_store",
    "capture",
    "restore",
    "restore_score",
    "serialize_score",
]
