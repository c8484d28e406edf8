from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest

from engine import AtomicList, Cadence, MergeConflict, NoteError, Score, note


def make_score_class(n: int) -> type:
    fields = [(f"f{i}", int, dataclasses.field(default=0)) for i in range(n)]
    return dataclasses.make_dataclass("Wide", fields, bases=(Score,))


def test_fifty_parallel_notes_writing_distinct_fields_all_land():
    wide = make_score_class(50)

    def writer(i: int):
        async def write(score) -> None:
            await asyncio.sleep(0)
            setattr(score, f"f{i}", i + 1)

        write.__name__ = f"write_{i}"
        return write

    result = asyncio.run(Cadence("wide", wide()).sync("all", [writer(i) for i in range(50)]).run())
    assert [getattr(result, f"f{i}") for i in range(50)] == list(range(1, 51))


def test_parallel_writes_to_one_field_conflict_by_default():
    wide = make_score_class(1)

    async def a(score) -> None:
        score.f0 = 1

    async def b(score) -> None:
        score.f0 = 2

    # As in the library, the conflict reaches the caller as the group's NoteError.
    with pytest.raises(NoteError) as info:
        asyncio.run(Cadence("c", wide()).sync("g", [a, b]).run())
    conflict = info.value.original_error
    assert info.value.note_name == "g"
    assert isinstance(conflict, MergeConflict)
    assert (conflict.field, sorted(conflict.note_names)) == ("f0", ["a", "b"])


def test_sync_notes_in_a_group_run_concurrently_in_threads():
    barrier = threading.Barrier(4, timeout=5)
    threads = set()

    def worker(score) -> None:
        threads.add(threading.get_ident())
        barrier.wait()  # deadlocks unless all four run at the same time

    wide = make_score_class(1)
    asyncio.run(Cadence("c", wide()).sync("g", [worker, worker, worker, worker]).run())
    assert len(threads) == 4


def test_cancelling_a_run_cancels_its_parallel_tasks_and_propagates():
    started = []
    cancelled = []
    all_started = asyncio.Event()

    async def hang(score) -> None:
        started.append(1)
        if len(started) == 5:
            all_started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    wide = make_score_class(1)
    cadence = Cadence("c", wide()).sync("g", [hang] * 5)

    async def scenario() -> set:
        task = asyncio.create_task(cadence.run())
        await all_started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return asyncio.all_tasks() - {asyncio.current_task()}

    leftover = asyncio.run(scenario())
    assert (len(cancelled), leftover) == (5, set())


def test_a_failing_task_cancels_its_siblings():
    cancelled = []

    async def hang(score) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    async def fail(score) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("x")

    wide = make_score_class(1)
    start = time.perf_counter()
    with pytest.raises(Exception) as info:
        asyncio.run(Cadence("c", wide()).sync("g", [hang, hang, fail]).run())
    assert (type(info.value).__name__, info.value.task_index, len(cancelled)) == (
        "ParallelNoteError",
        2,
        2,
    )
    assert time.perf_counter() - start < 5


def test_atomic_list_is_shared_not_copied_between_parallel_notes():
    @dataclasses.dataclass
    class Agg(Score):
        results: AtomicList = dataclasses.field(default_factory=AtomicList)

    def add(i: int):
        @note(name=f"add{i}")
        async def fn(score) -> None:
            score.results.append(i)

        return fn

    result = asyncio.run(Cadence("a", Agg()).sync("g", [add(i) for i in range(20)]).run())
    assert sorted(result.results) == list(range(20))


def test_many_concurrent_runs_of_one_cadence_do_not_share_scores():
    @dataclasses.dataclass
    class C(Score):
        n: int = 0
        trail: list = dataclasses.field(default_factory=list)

    async def step(score) -> None:
        await asyncio.sleep(0)
        score.trail.append(score.n)

    cadence = Cadence("c", C()).then("a", step).sync("g", [step]).then("b", step)

    async def scenario() -> list:
        return await asyncio.gather(*(cadence.run(C(n=i)) for i in range(200)))

    results = asyncio.run(scenario())
    assert [r.trail for r in results] == [[i, i, i] for i in range(200)]


def test_cancelling_an_observed_run_reports_it_to_hooks_and_leaves_nothing_running():
    from engine import CADENCE_FAILED, EventEmitter

    emitter = EventEmitter()
    failures = []
    emitter.on(CADENCE_FAILED, lambda e: failures.append(type(e.error).__name__))
    all_started = asyncio.Event()
    started = []

    async def hang(score) -> None:
        started.append(1)
        if len(started) == 3:
            all_started.set()
        await asyncio.sleep(3600)

    wide = make_score_class(1)
    cadence = Cadence("c", wide()).with_hooks(emitter).sync("g", [hang] * 3)

    async def scenario() -> set:
        task = asyncio.create_task(cadence.run())
        await all_started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return asyncio.all_tasks() - {asyncio.current_task()}

    assert asyncio.run(scenario()) == set()
    assert failures == ["CancelledError"]
