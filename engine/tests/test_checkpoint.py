from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from engine import Cadence, CadenceError, NoteError, Score
from engine.checkpoint import Checkpoint, CheckpointStore, InMemoryCheckpointStore


@dataclass
class Pay(Score):
    order_id: str = ""
    steps: list = field(default_factory=list)


def make(store: InMemoryCheckpointStore, calls: list, crash: dict) -> Cadence:
    async def validate(score: Pay) -> None:
        calls.append("validate")
        score.steps.append("validate")

    async def charge(score: Pay) -> None:
        calls.append("charge")
        if crash.get("charge"):
            raise ConnectionError("crash")
        score.steps.append("charge")

    async def disburse(score: Pay) -> None:
        calls.append("disburse")
        score.steps.append("disburse")

    return (
        Cadence("disburse", Pay(order_id="ORD-123"))
        .with_checkpoint(store, run_id="order-123")
        .then("validate", validate)
        .then("charge", charge)
        .then("disburse", disburse)
    )


def test_a_rerun_resumes_after_the_last_completed_measure():
    store = InMemoryCheckpointStore()
    calls: list[str] = []
    crash = {"charge": True}
    with pytest.raises(NoteError):
        asyncio.run(make(store, calls, crash).run())
    saved = asyncio.run(store.load("order-123"))
    assert (saved.measure_index, saved.measure_name, saved.completed) == (0, "validate", False)
    # a new process: fresh cadence object, same run id
    crash["charge"] = False
    result = asyncio.run(make(store, calls, crash).run())
    assert calls == ["validate", "charge", "charge", "disburse"]
    assert result.steps == ["validate", "charge", "disburse"]


def test_a_completed_run_is_not_run_again_until_its_checkpoint_is_deleted():
    store = InMemoryCheckpointStore()
    calls: list[str] = []
    asyncio.run(make(store, calls, {}).run())
    again = asyncio.run(make(store, calls, {}).run())
    assert calls == ["validate", "charge", "disburse"]
    assert again.steps == ["validate", "charge", "disburse"]
    asyncio.run(store.delete("order-123"))
    asyncio.run(make(store, calls, {}).run())
    assert calls == ["validate", "charge", "disburse"] * 2


def test_run_id_can_be_given_per_run_and_is_required():
    store = InMemoryCheckpointStore()

    async def noop(score: Pay) -> None:
        pass

    cadence = Cadence("c", Pay()).with_checkpoint(store).then("a", noop)
    with pytest.raises(CadenceError) as info:
        asyncio.run(cadence.run())
    assert info.value.code == "NO_RUN_ID"
    asyncio.run(cadence.run(Pay(), run_id="r-1"))
    assert "r-1" in store


def test_a_checkpoint_from_another_definition_is_refused():
    store = InMemoryCheckpointStore()
    asyncio.run(store.save("r", Checkpoint("r", "c", 0, "renamed", {"order_id": "", "steps": []})))

    async def noop(score: Pay) -> None:
        pass

    cadence = Cadence("c", Pay()).with_checkpoint(store, "r").then("a", noop).then("b", noop)
    with pytest.raises(CadenceError) as info:
        asyncio.run(cadence.run())
    assert info.value.code == "CHECKPOINT_MISMATCH"


def test_store_protocol_and_isolation_of_saved_state():
    store = InMemoryCheckpointStore()
    assert isinstance(store, CheckpointStore)
    state = {"steps": ["a"]}
    asyncio.run(store.save("r", Checkpoint("r", "c", 0, "a", state)))
    state["steps"].append("mutated")
    loaded = asyncio.run(store.load("r"))
    assert loaded.score_state == {"steps": ["a"]}
    assert Checkpoint.from_dict(loaded.to_dict()) == loaded
    assert asyncio.run(store.load("missing")) is None
