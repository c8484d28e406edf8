from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from engine import Cadence, NoteError, Score
from engine.events import (
    CADENCE_COMPLETED,
    CADENCE_FAILED,
    CADENCE_STARTED,
    NOTE_COMPLETED,
    NOTE_FAILED,
    NOTE_RETRIED,
    NOTE_STARTED,
    Event,
    EventEmitter,
)


@dataclass
class S(Score):
    value: int = 0


async def inc(score: S) -> None:
    score.value += 1


def boom(score: S) -> None:
    raise ValueError("boom")


def test_specific_and_wildcard_listeners_receive_events():
    emitter = EventEmitter()
    completed, everything = [], []
    emitter.on(
        NOTE_COMPLETED, lambda e: completed.append((e.cadence_name, e.note_name, e.duration >= 0))
    )
    emitter.on("*", lambda e: everything.append(e.type))
    asyncio.run(
        Cadence("checkout", S()).with_hooks(emitter).then("validate", inc).then("charge", inc).run()
    )
    assert completed == [("checkout", "validate", True), ("checkout", "charge", True)]
    assert everything == [
        CADENCE_STARTED,
        NOTE_STARTED,
        NOTE_COMPLETED,
        NOTE_STARTED,
        NOTE_COMPLETED,
        CADENCE_COMPLETED,
    ]


def test_async_listeners_are_awaited_and_failures_emit_failed_events():
    emitter = EventEmitter()
    seen = []

    async def on_failed(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append((event.type, event.note_name, type(event.error).__name__))

    emitter.on(NOTE_FAILED, on_failed)
    emitter.on(CADENCE_FAILED, on_failed)
    with pytest.raises(NoteError):
        asyncio.run(Cadence("c", S()).with_hooks(emitter).then("bad", boom).run())
    assert seen == [(NOTE_FAILED, "bad", "NoteError"), (CADENCE_FAILED, None, "NoteError")]


def test_decorator_registration_off_and_counts():
    emitter = EventEmitter()

    @emitter.on(NOTE_STARTED)
    def listener(event: Event) -> None:
        pass

    assert emitter.listener_count(NOTE_STARTED) == 1
    assert emitter.off(NOTE_STARTED, listener) is emitter  # chainable, as in the library
    assert emitter.listener_count() == 0
    # Any type may be registered (the library refuses none); one never emitted is never heard.
    assert emitter.on("note.exploded", listener).on(NOTE_STARTED, listener) is emitter


def test_a_failing_listener_does_not_stop_others_or_the_run():
    emitter = EventEmitter()
    seen = []
    emitter.on(NOTE_COMPLETED, lambda e: 1 / 0)
    emitter.on(NOTE_COMPLETED, lambda e: seen.append(e.note_name))
    result = asyncio.run(Cadence("c", S()).with_hooks(emitter).then("a", inc).run())
    assert (result.value, seen) == (1, ["a"])


def test_emit_directly_and_event_to_dict():
    emitter = EventEmitter()
    seen = []
    emitter.on("*", seen.append)
    event = Event(NOTE_STARTED, "c", "n", run_id="r1")
    asyncio.run(emitter.emit(event))
    assert seen == [event]
    data = event.to_dict()
    assert (data["type"], data["cadence_name"], data["note_name"], data["run_id"]) == (
        NOTE_STARTED,
        "c",
        "n",
        "r1",
    )


def test_listeners_added_between_runs_are_honoured():
    # given a cadence that already ran once with an emitter nobody listened to per note
    emitter = EventEmitter()
    cadence = Cadence("c", S()).with_hooks(emitter).then("a", inc)
    asyncio.run(cadence.run(S()))
    # when a per-note listener is added, then removed
    seen = []
    emitter.on(NOTE_STARTED, lambda e: seen.append(e.note_name))
    asyncio.run(cadence.run(S()))
    emitter.off(NOTE_STARTED, seen.append)  # not registered: a no-op
    assert seen == ["a"]


async def pause(score: S) -> None:
    await asyncio.sleep(0.02)
    score.value += 1


def test_a_slow_listener_counts_in_no_notes_duration():
    # given instant notes and a listener that takes 30 ms after each of them
    emitter = EventEmitter()
    durations = []

    def slow(event):
        time.sleep(0.03)
        durations.append((event.note_name, event.duration))

    emitter.on(NOTE_COMPLETED, slow)
    cadence = Cadence("c", S()).with_hooks(emitter).then("a", inc).then("b", inc).then("c", inc)
    # when it runs
    asyncio.run(cadence.run(S()))
    # then every note is short: the listener's time is none of theirs
    assert [name for name, _ in durations] == ["a", "b", "c"]
    assert all(0 <= d < 0.02 for _, d in durations), durations


def test_appending_listeners_see_durations_that_add_up_to_the_run():
    # given events collected by list.append (no second clock reading per note)
    emitter = EventEmitter()
    seen, runs = [], []
    emitter.on(NOTE_COMPLETED, seen.append)
    emitter.on(CADENCE_COMPLETED, runs.append)
    cadence = Cadence("c", S()).with_hooks(emitter).then("a", inc).then("b", pause).then("c", inc)
    # when it runs
    result = asyncio.run(cadence.run(S()))
    # then the sleeping note carries its sleep, the others little, in order and within the run
    assert result.value == 3 and [e.note_name for e in seen] == ["a", "b", "c"]
    a, b, c = (e.duration for e in seen)
    assert b >= 0.02 and 0 <= a < 0.02 and 0 <= c < 0.02
    assert a + b + c <= runs[0].duration
    stamps = [e.timestamp for e in seen]
    assert stamps == sorted(stamps) and abs(stamps[-1] - time.time()) < 5
    assert [e.timestamp for e in seen] == stamps  # read twice: the same values


def test_events_name_their_own_run_when_runs_overlap():
    # given one cadence with a per-note listener, run concurrently under different run ids
    emitter = EventEmitter()
    seen = []
    emitter.on(NOTE_COMPLETED, seen.append)
    cadence = Cadence("orders", S()).with_hooks(emitter).then("a", pause).then("b", inc)

    async def both():
        return await asyncio.gather(
            cadence.run(S(), run_id="r1"), cadence.run(S(), run_id="r2"), cadence.run(S())
        )

    # when they overlap
    asyncio.run(both())
    # then each event carries its own run's id and the cadence's name
    got = sorted((e.run_id or "", e.note_name) for e in seen)
    assert got == [("", "a"), ("", "b"), ("r1", "a"), ("r1", "b"), ("r2", "a"), ("r2", "b")]
    assert {e.cadence_name for e in seen} == {"orders"}


def test_a_child_cadences_events_name_the_child_inside_an_observed_parent():
    # given a parent with an after-note hook and a child whose only hook is an emitter
    child_emitter, parent_seen, child_seen = EventEmitter(), [], []
    child_emitter.on(NOTE_COMPLETED, child_seen.append)
    child = Cadence("child", S()).with_hooks(child_emitter).then("inner", inc)
    parent_emitter = EventEmitter()
    parent_emitter.on(NOTE_COMPLETED, lambda e: parent_seen.append((e.cadence_name, e.note_name)))
    parent_emitter.on(CADENCE_COMPLETED, lambda e: parent_seen.append((e.cadence_name, None)))
    parent = Cadence("parent", S()).with_hooks(parent_emitter).then("a", inc).child("sub", child)
    # when the parent runs with a run id
    asyncio.run(parent.run(S(), run_id="p1"))
    # then the child's events name the child (and no run id of its own), the parent's the parent
    assert [(e.cadence_name, e.note_name, e.run_id) for e in child_seen] == [
        ("child", "inner", None)
    ]
    assert parent_seen == [("parent", "a"), ("parent", "sub"), ("parent", None)]


def test_a_sync_retried_note_under_an_emitter_that_ignores_retries():
    # given a sync note that fails once under @retry, and an emitter listening to completions
    from engine import retry

    attempts = []

    @retry(max_attempts=3, delay=0)
    def flaky(score: S) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("once")
        score.value += 1

    emitter = EventEmitter()
    seen, retried = [], []
    emitter.on(NOTE_COMPLETED, lambda e: seen.append(e.note_name))
    cadence = Cadence("c", S()).with_hooks(emitter).then("flaky", flaky)
    # when it runs (formerly: the retry notification crashed the run)
    result = asyncio.run(cadence.run(S()))
    assert (result.value, len(attempts), seen) == (1, 2, ["flaky"])
    # and with a retry listener, the retry is reported
    attempts.clear()
    emitter.on(NOTE_RETRIED, lambda e: retried.append((e.note_name, e.attempt)))
    asyncio.run(cadence.run(S()))
    assert retried == [("flaky", 1)]


def test_failed_and_completed_events_of_one_run_name_the_same_run():
    # given completion and failure listeners, a failing note handled with stop=False
    emitter = EventEmitter()
    seen = []
    emitter.on(NOTE_COMPLETED, seen.append)
    emitter.on(NOTE_FAILED, seen.append)
    cadence = (
        Cadence("c", S())
        .with_hooks(emitter)
        .then("a", inc)
        .then("b", boom)
        .on_error(lambda score, error: None, stop=False)
        .then("z", inc)
    )
    # when it runs under a run id
    result = asyncio.run(cadence.run(S(), run_id="r9"))
    # then every event names the cadence and the run, the failure included
    assert result.value == 2
    assert [(e.type, e.cadence_name, e.note_name, e.run_id) for e in seen] == [
        (NOTE_COMPLETED, "c", "a", "r9"),
        (NOTE_FAILED, "c", "b", "r9"),
        (NOTE_COMPLETED, "c", "z", "r9"),
    ]
    assert isinstance(seen[1].error, NoteError) and seen[1].duration >= 0
