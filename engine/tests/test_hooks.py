from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pytest

from engine import (
    Cadence,
    CadenceHooks,
    DebugHooks,
    LoggingHooks,
    MetricsHooks,
    NoteError,
    Score,
    TimingHooks,
    TracingHooks,
    note,
)


@dataclass
class S(Score):
    value: int = 0


async def inc(score: S) -> None:
    score.value += 1


def boom(score: S) -> None:
    raise ValueError("boom")


class Recorder(CadenceHooks):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def before_cadence(self, cadence_name, score):
        self.calls.append(("before_cadence", cadence_name))

    async def after_cadence(self, cadence_name, score, duration, error=None):
        self.calls.append(("after_cadence", cadence_name, type(error).__name__ if error else None))

    async def before_note(self, note_name, score):
        self.calls.append(("before_note", note_name, score.value))

    def after_note(self, note_name, score, duration, error=None):  # sync hooks work too
        self.calls.append(
            ("after_note", note_name, score.value, type(error).__name__ if error else None)
        )

    async def on_error(self, note_name, score, error):
        self.calls.append(("on_error", note_name, type(error.original_error).__name__))

    async def on_retry(self, note_name, attempt, error):
        self.calls.append(("on_retry", note_name, attempt, str(error)))


def test_hooks_see_the_lifecycle_in_order():
    recorder = Recorder()
    cadence = Cadence("c", S()).with_hooks(recorder).then("a", inc).then("b", inc)
    asyncio.run(cadence.run())
    assert recorder.calls == [
        ("before_cadence", "c"),
        ("before_note", "a", 0),
        ("after_note", "a", 1, None),
        ("before_note", "b", 1),
        ("after_note", "b", 2, None),
        ("after_cadence", "c", None),
    ]


def test_hooks_see_errors():
    recorder = Recorder()
    cadence = Cadence("c", S()).with_hooks([recorder]).then("bad", boom)
    with pytest.raises(NoteError):
        asyncio.run(cadence.run())
    assert recorder.calls == [
        ("before_cadence", "c"),
        ("before_note", "bad", 0),
        ("after_note", "bad", 0, "NoteError"),
        ("on_error", "bad", "ValueError"),
        ("after_cadence", "c", "NoteError"),
    ]


def test_on_retry_hook_receives_each_failed_attempt(clock):
    recorder = Recorder()
    attempts = []

    @note(retry={"max_attempts": 3, "delay": 0.1})
    async def flaky(score: S) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError(f"try {len(attempts)}")

    asyncio.run(Cadence("c", S()).with_hooks(recorder).then("call", flaky).run())
    assert [c for c in recorder.calls if c[0] == "on_retry"] == [
        ("on_retry", "call", 1, "try 1"),
        ("on_retry", "call", 2, "try 2"),
    ]


def test_on_retry_hook_from_a_sync_note_in_a_thread(clock):
    recorder = Recorder()
    attempts = []

    @note(retry={"max_attempts": 2, "delay": 0.1})
    def flaky(score: S) -> None:
        attempts.append(1)
        if len(attempts) < 2:
            raise OSError("once")

    async def settle(score: S) -> None:
        for _ in range(5):
            await asyncio.sleep(0.01)

    asyncio.run(
        Cadence("c", S()).with_hooks(recorder).sync("g", [flaky]).then("settle", settle).run()
    )
    assert [c for c in recorder.calls if c[0] == "on_retry"] == [("on_retry", "flaky", 1, "once")]


def test_a_failing_hook_never_breaks_the_run(caplog):
    class Broken(CadenceHooks):
        async def before_note(self, note_name, score):
            raise RuntimeError("hook bug")

    with caplog.at_level(logging.ERROR, logger="engine.hooks"):
        result = asyncio.run(Cadence("c", S()).with_hooks(Broken()).then("a", inc).run())
    assert result.value == 1
    assert "hook bug" in caplog.text


def test_logging_hooks_log_each_event(caplog):
    with caplog.at_level(logging.INFO, logger="cadence"):
        asyncio.run(Cadence("c", S()).with_hooks(LoggingHooks()).then("a", inc).run())
    messages = [r.getMessage() for r in caplog.records if r.name == "cadence"]
    assert messages[0] == "[c] Starting cadence"
    assert messages[1] == "  → a"
    assert messages[2].startswith("  ✓ a (") and messages[2].endswith("s)")
    assert messages[3].startswith("[c] Cadence completed in ")


def test_timing_metrics_tracing_and_debug_hooks():
    timing, metrics, tracing, debug = TimingHooks(), MetricsHooks(), TracingHooks(), DebugHooks()
    cadence = (
        Cadence("c", S())
        .with_hooks([timing, metrics, tracing, debug])
        .then("a", inc)
        .then("bad", boom)
        .on_error(lambda s, e: None, stop=False)
    )
    asyncio.run(cadence.run())
    assert sorted(timing.timings) == ["a", "bad"]
    assert len(timing.cadence_timings["c"]) == 1
    assert metrics.snapshot()["counters"] == {
        "cadence.c.started": 1,
        "note.a.completed": 1,
        "note.bad.failed": 1,
        # as in the library, a run with a handled failure still counts as a failed cadence
        "cadence.c.failed": 1,
    }
    assert [(s.kind, s.name, type(s.error).__name__) for s in tracing.spans] == [
        ("note", "a", "NoneType"),
        ("note", "bad", "NoteError"),
        ("cadence", "c", "NoteError"),
    ]
    assert [(r["note"], r["phase"], r["score"]) for r in debug.records] == [
        ("a", "before", {"value": 0}),
        ("a", "after", {"value": 1}),
        ("bad", "before", {"value": 1}),
        ("bad", "after", {"value": 1}),
    ]


def test_tracing_hooks_forward_to_an_opentelemetry_tracer():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    hooks = TracingHooks(tracer=provider.get_tracer("test"))
    asyncio.run(Cadence("c", S()).with_hooks(hooks).then("a", inc).run())
    note_span, cadence_span = exporter.get_finished_spans()
    assert (note_span.name, cadence_span.name) == ("note:a", "cadence:c")
    assert note_span.parent.span_id == cadence_span.context.span_id
    assert note_span.attributes["note.name"] == "a"
    assert cadence_span.attributes["cadence.name"] == "c"


def test_reporters_get_each_measure_and_the_total():
    reports = []
    asyncio.run(
        Cadence("c", S())
        .with_reporter(lambda name, elapsed, score: reports.append((name, score.value)))
        .then("a", inc)
        .run()
    )
    assert reports == [("a", 1), ("c:TOTAL", 1)]
