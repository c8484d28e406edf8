from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from engine import Cadence, NoteError, Score
from engine.events import (
    CADENCE_COMPLETED,
    CADENCE_FAILED,
    CADENCE_STARTED,
    NOTE_COMPLETED,
    NOTE_FAILED,
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
