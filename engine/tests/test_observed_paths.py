"""The observed run path (hooks, reporters, error handlers, checkpoints) across every construct."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from engine import (
    Cadence,
    CadenceHooks,
    ImmutableScore,
    InMemoryCheckpointStore,
    Interrupt,
    NoteError,
    Score,
    note,
)
from engine.flow import build_cadence


@dataclass
class S(Score):
    value: int = 0
    trail: list = field(default_factory=list)


class Names(CadenceHooks):
    def __init__(self) -> None:
        self.before: list[str] = []
        self.retries: list[tuple[str, int]] = []

    def before_note(self, note_name, score):
        self.before.append(note_name)

    async def on_retry(self, note_name, attempt, error):
        self.retries.append((note_name, attempt))


async def inc(score: S) -> None:
    score.value += 1


def test_every_construct_runs_on_the_observed_path():
    hooks = Names()
    child = Cadence("child").then("c1", inc)
    cadence = (
        Cadence("all", S())
        .with_hooks(hooks)
        .then("a", inc)
        .sequence("seq", [inc, inc])
        .sync("group", [inc])
        .split(
            "branch", lambda s: True, [inc, inc], parallel=True, merge_strategy="last_write_wins"
        )
        .child("kid", child)
    )
    result = asyncio.run(cadence.run())
    assert result.value == 6
    assert hooks.before == ["a", "seq", "group", "branch", "kid"]


def test_async_reporters_are_awaited():
    seen = []

    async def reporter(name, elapsed, score):
        await asyncio.sleep(0)
        seen.append(name)

    asyncio.run(Cadence("c", S()).with_reporter(reporter).then("a", inc).run())
    assert seen == ["a", "c:TOTAL"]


def test_retry_hook_from_a_sync_note_on_the_loop_thread(clock):
    hooks = Names()
    attempts = []

    @note(retry={"max_attempts": 3, "delay": 0.1})
    def flaky(score: S) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("again")

    async def settle(score: S) -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(
        Cadence("c", S()).with_hooks(hooks).then("flaky", flaky).then("settle", settle).run()
    )
    assert hooks.retries == [("flaky", 1), ("flaky", 2)]


def test_interrupt_with_a_checkpoint_marks_the_run_completed():
    store = InMemoryCheckpointStore()

    def stop(score: S) -> None:
        raise Interrupt()

    cadence = (
        Cadence("c", S())
        .with_checkpoint(store, "r")
        .then("a", inc)
        .then("stop", stop, can_interrupt=True)
        .then("b", inc)
    )
    assert asyncio.run(cadence.run()).value == 1
    saved = asyncio.run(store.load("r"))
    assert (saved.measure_name, saved.completed) == ("stop", True)


def test_a_handled_failure_counts_as_completed_for_checkpoints():
    store = InMemoryCheckpointStore()
    calls = []

    def boom(score: S) -> None:
        calls.append("boom")
        raise ValueError("x")

    def handler(score: S, error: NoteError) -> None:
        if isinstance(error.original_error, RuntimeError):
            raise error  # only the crash is fatal

    def build() -> Cadence:
        return (
            Cadence("c", S())
            .with_checkpoint(store, "r")
            .then("boom", boom)
            .on_error(handler, stop=False)
            .then("crash", crash)
        )

    crashing = {"on": True}

    def crash(score: S) -> None:
        calls.append("crash")
        if crashing["on"]:
            raise RuntimeError("crash")

    with pytest.raises(NoteError):
        asyncio.run(build().run())
    crashing["on"] = False
    asyncio.run(build().run())
    assert calls == ["boom", "crash", "crash"]


def test_an_error_handler_that_raises_propagates_its_own_error():
    def boom(score: S) -> None:
        raise ValueError("x")

    def handler(score: S, error: Exception) -> None:
        raise KeyError("handler broke")

    with pytest.raises(KeyError):
        asyncio.run(Cadence("c", S()).then("boom", boom).on_error(handler, stop=False).run())


@dataclass(frozen=True)
class Frozen(ImmutableScore):
    count: int = 0


def test_checkpoints_resume_immutable_scores():
    store = InMemoryCheckpointStore()
    fail = {"on": True}

    def inc_frozen(score: Frozen) -> Frozen:
        return score.with_field("count", score.count + 1)

    def maybe_fail(score: Frozen) -> Frozen:
        if fail["on"]:
            raise RuntimeError("crash")
        return score.with_field("count", score.count + 10)

    def build() -> Cadence:
        return (
            Cadence("f", Frozen())
            .with_checkpoint(store, "r")
            .then("a", inc_frozen)
            .then("b", maybe_fail)
        )

    with pytest.raises(NoteError):
        asyncio.run(build().run())
    fail["on"] = False
    assert asyncio.run(build().run()) == Frozen(count=11)


def test_json_flow_interrupt_and_sequence_options(clock):
    calls = []

    async def stop(score: S) -> None:
        raise Interrupt()

    async def flaky(score: S) -> None:
        calls.append(1)
        if len(calls) < 2:
            raise OSError("x")
        score.value = 5

    flow = {
        "name": "j",
        "steps": [
            {"sequence": "s", "notes": [{"note": "flaky", "retry": 2}]},
            {"then": "halt", "note": "stop", "can_interrupt": True},
            {"then": "never", "note": "flaky"},
        ],
    }
    result = asyncio.run(build_cadence(flow, {"flaky": flaky, "stop": stop}, S()).run())
    assert (result.value, len(calls)) == (5, 2)


class After(CadenceHooks):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def after_note(self, note_name, score, duration, error=None):
        self.calls.append((note_name, type(error).__name__ if error else None))


def test_after_note_only_hooks_see_every_construct_skip_errors_and_interrupts():
    # given hooks implementing after_note only (the runner's specialised loop)
    hooks = After()

    def skipper(score: S) -> None:
        from engine import Skip

        raise Skip()

    def boom(score: S) -> None:
        raise ValueError("x")

    def stop(score: S) -> None:
        raise Interrupt()

    cadence = (
        Cadence("c", S())
        .with_hooks(hooks)
        .then("a", inc)
        .sequence("seq", [inc])
        .sync("group", [inc])
        .then("boom", boom)
        .on_error(lambda s, e: s.trail.append(e.note_name), stop=False)
        .then("stop", stop, can_interrupt=True)
        .then("never", inc)
    )
    # when it runs
    result = asyncio.run(cadence.run())
    # then every measure up to the interrupt was reported, with its error if any
    assert hooks.calls == [
        ("a", None),
        ("seq", None),
        ("group", None),
        ("boom", "NoteError"),
        ("stop", None),
    ]
    assert (result.value, result.trail) == (3, ["boom"])
    # and a Skip stops the run there, reported without an error
    hooks.calls.clear()
    skipping = Cadence("c", S()).with_hooks(hooks).then("a", inc).then("skip", skipper)
    assert asyncio.run(skipping.then("never", inc).run()).value == 1
    assert hooks.calls == [("a", None), ("skip", None)]


def test_after_note_only_hooks_and_a_stopping_error():
    hooks = After()

    def boom(score: S) -> None:
        raise ValueError("x")

    with pytest.raises(NoteError):
        asyncio.run(Cadence("c", S()).with_hooks(hooks).then("boom", boom).then("never", inc).run())
    assert hooks.calls == [("boom", "NoteError")]
