from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from engine import AtomicList, Cadence, NoteError, RecordingHooks, Score, StepRecord


@dataclass
class Order(Score):
    total: float = 0.0
    items: list = field(default_factory=list)
    seen: AtomicList = field(default_factory=AtomicList)
    status: str = "new"


async def add_item(score: Order) -> None:
    score.items.append("book")  # an in-place change is a change too
    score.total = 12.5


def price_check(score: Order) -> None:
    pass  # changes nothing


def fail(score: Order) -> None:
    score.status = "failing"
    raise ValueError("card declined")


def test_each_measure_is_recorded_with_its_changes_and_outcome():
    # given a recorder on a cadence whose last note fails
    records: list[StepRecord] = []
    cadence = (
        Cadence("checkout", Order())
        .with_hooks(RecordingHooks(records.append))
        .then("add", add_item)
        .sync("check", [price_check])
        .then("pay", fail)
    )
    # when it runs
    with pytest.raises(NoteError):
        asyncio.run(cadence.run(run_id=None))
    # then there is one record per measure, with exactly what it changed
    assert [(r.note_name, r.outcome, r.changes) for r in records] == [
        ("add", "completed", {"total": 12.5, "items": ["book"]}),
        ("check", "completed", {}),
        ("pay", "failed", {"status": "failing"}),
    ]
    data = records[2].to_dict()
    assert (data["cadence"], data["error"]) == (
        "checkout",
        {"type": "NoteError", "message": "card declined"},
    )
    assert data["ended_at"] - data["started_at"] == pytest.approx(data["duration"], abs=1e-6)


def test_async_callbacks_and_concurrent_runs_are_kept_apart():
    records: list[tuple[float, dict]] = []

    async def store(record: StepRecord) -> None:
        await asyncio.sleep(0)
        records.append(record.changes)

    async def set_total(score: Order) -> None:
        await asyncio.sleep(0)
        score.total = score.total + 1

    cadence = Cadence("c", Order()).with_hooks(RecordingHooks(store)).then("inc", set_total)

    async def scenario() -> None:
        await asyncio.gather(*(cadence.run(Order(total=float(i))) for i in range(5)))

    asyncio.run(scenario())
    assert sorted(r["total"] for r in records) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_cancelled_run_leaves_no_snapshot_behind():
    recorder = RecordingHooks(lambda record: None)
    started = asyncio.Event()

    async def hang(score: Order) -> None:
        started.set()
        await asyncio.sleep(3600)

    cadence = Cadence("c", Order()).with_hooks(recorder).then("hang", hang)

    async def scenario() -> None:
        task = asyncio.create_task(cadence.run())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert recorder._before == {}
