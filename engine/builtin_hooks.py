"""The built-in hooks: logging, timing, metrics, tracing and debugging.

Their constructors, reports and printed/logged text follow the published library
(``TimingHooks.get_report()``, ``MetricsHooks.get_metrics()``, ``DebugHooks(show_score=,
show_timing=)``, ``LoggingHooks(logger_name=, level=, error_level=)``); the engine's additions
(``TimingHooks.timings``, ``MetricsHooks.snapshot()``, ``TracingHooks.spans``,
``DebugHooks.records``) are kept. The methods are plain functions, not coroutines: the runner
calls them without an event-loop round trip.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .context import current_run
from .hooks import CadenceHooks
from .score import to_jsonable


def _run_key() -> int:
    run = current_run.get()
    return id(run) if run is not None else 0


class LoggingHooks(CadenceHooks):
    """Logs cadence and note starts and ends (logger ``cadence`` unless named)."""

    def __init__(
        self,
        logger_name: str | logging.Logger = "cadence",
        level: int = logging.INFO,
        error_level: int = logging.ERROR,
    ) -> None:
        self.logger = (
            logger_name
            if isinstance(logger_name, logging.Logger)
            else logging.getLogger(logger_name)
        )
        self.level = level
        self.error_level = error_level

    def before_cadence(self, cadence_name: str, score: Any) -> None:
        self.logger.log(self.level, f"[{cadence_name}] Starting cadence")

    def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        if error is not None:
            self.logger.log(
                self.error_level, f"[{cadence_name}] Cadence failed after {duration:.3f}s: {error}"
            )
        else:
            self.logger.log(self.level, f"[{cadence_name}] Cadence completed in {duration:.3f}s")

    def before_note(self, note_name: str, score: Any) -> None:
        self.logger.log(self.level, f"  → {note_name}")

    def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        if error is not None:
            self.logger.log(
                self.error_level, f"  ✗ {note_name} failed after {duration:.3f}s: {error}"
            )
        else:
            self.logger.log(self.level, f"  ✓ {note_name} ({duration:.3f}s)")


class TimingHooks(CadenceHooks):
    """Collects durations. ``note_times`` (last run, seconds per note), ``total_duration`` and
    ``get_report()`` as in the library; ``timings[note]`` / ``cadence_timings[name]`` keep every
    run's durations."""

    def __init__(self) -> None:
        self._cadence_name: str | None = None
        self._note_times: dict[str, float] = {}
        self._total_duration = 0.0
        self.timings: dict[str, list[float]] = {}
        self.cadence_timings: dict[str, list[float]] = {}

    def before_cadence(self, cadence_name: str, score: Any) -> None:
        self._cadence_name = cadence_name
        self._note_times.clear()

    def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        self._note_times[note_name] = duration
        self.timings.setdefault(note_name, []).append(duration)

    def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        self._total_duration = duration
        self.cadence_timings.setdefault(cadence_name, []).append(duration)

    @property
    def note_times(self) -> dict[str, float]:
        return self._note_times.copy()

    @property
    def total_duration(self) -> float:
        return self._total_duration

    def total(self, note_name: str) -> float:
        """Seconds spent in ``note_name`` over every run seen."""
        return sum(self.timings.get(note_name, ()))

    def get_report(self) -> str:
        lines = [f"=== Timing Report: {self._cadence_name} ==="]
        total = self._total_duration
        for note_name, duration in self._note_times.items():
            pct = duration / total * 100 if total > 0 else 0
            lines.append(f"  {note_name}: {duration:.3f}s ({pct:.1f}%)")
        lines.append(f"  TOTAL: {total:.3f}s")
        return "\n".join(lines)


def _rate(success: int, failure: int) -> float:
    return success / (success + failure) if success + failure else 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


class MetricsHooks(CadenceHooks):
    """Counts and durations per cadence and note, and retries per note; safe under threads.
    ``get_metrics()`` / ``reset()`` as in the library; ``snapshot()`` gives flat counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cadences: dict[str, dict[str, int]] = {}
        self._notes: dict[str, dict[str, int]] = {}
        self._cadence_durations: dict[str, list[float]] = {}
        self._note_durations: dict[str, list[float]] = {}
        self._retries: dict[str, int] = {}
        self._started: dict[str, int] = {}

    def before_cadence(self, cadence_name: str, score: Any) -> None:
        with self._lock:
            self._cadences.setdefault(cadence_name, {"success": 0, "failure": 0})
            self._cadence_durations.setdefault(cadence_name, [])
            self._started[cadence_name] = self._started.get(cadence_name, 0) + 1

    def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        with self._lock:
            counts = self._cadences.setdefault(cadence_name, {"success": 0, "failure": 0})
            counts["failure" if error is not None else "success"] += 1
            self._cadence_durations.setdefault(cadence_name, []).append(duration)

    def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        with self._lock:
            counts = self._notes.setdefault(note_name, {"success": 0, "failure": 0})
            counts["failure" if error is not None else "success"] += 1
            self._note_durations.setdefault(note_name, []).append(duration)

    def on_retry(
        self, note_name: str, score: Any, attempt: int, max_attempts: int, error: BaseException
    ) -> None:
        with self._lock:
            self._retries[note_name] = self._retries.get(note_name, 0) + 1

    def get_metrics(self) -> dict[str, Any]:
        with self._lock:
            return {
                "cadences": {
                    name: {
                        "success": c["success"],
                        "failure": c["failure"],
                        "total": c["success"] + c["failure"],
                        "success_rate": _rate(c["success"], c["failure"]),
                        "avg_duration": _mean(self._cadence_durations.get(name, [])),
                    }
                    for name, c in self._cadences.items()
                },
                "notes": {
                    name: {
                        "success": c["success"],
                        "failure": c["failure"],
                        "success_rate": _rate(c["success"], c["failure"]),
                        "avg_duration": _mean(self._note_durations.get(name, [])),
                    }
                    for name, c in self._notes.items()
                },
                "retries": dict(self._retries),
            }

    def snapshot(self) -> dict[str, Any]:
        """Flat counters (``cadence.<name>.started|completed|failed``, ``note.<name>.completed|
        failed|retried``) and total seconds per note."""
        with self._lock:
            counters: dict[str, int] = {}
            for name, n in self._started.items():
                counters[f"cadence.{name}.started"] = n
            for name, c in self._cadences.items():
                for key, outcome in (("success", "completed"), ("failure", "failed")):
                    if c[key]:
                        counters[f"cadence.{name}.{outcome}"] = c[key]
            for name, c in self._notes.items():
                for key, outcome in (("success", "completed"), ("failure", "failed")):
                    if c[key]:
                        counters[f"note.{name}.{outcome}"] = c[key]
            for name, n in self._retries.items():
                counters[f"note.{name}.retried"] = n
            durations = {name: sum(d) for name, d in self._note_durations.items()}
            return {"counters": counters, "durations": durations}

    def reset(self) -> None:
        with self._lock:
            for table in (
                self._cadences,
                self._notes,
                self._cadence_durations,
                self._note_durations,
                self._retries,
                self._started,
            ):
                table.clear()


class Span:
    """A span recorded by :class:`TracingHooks` (kept whether or not a tracer is given)."""

    __slots__ = ("name", "kind", "start", "end", "error", "run")

    def __init__(self, name: str, kind: str, start: float, run: int) -> None:
        self.name = name
        self.kind = kind
        self.start = start
        self.end: float | None = None
        self.error: BaseException | None = None
        self.run = run

    def __repr__(self) -> str:
        return f"Span({self.kind}:{self.name}, error={self.error!r})"


def _mark_failed(otel_span: Any, error: BaseException) -> None:
    try:
        from opentelemetry.trace import Status, StatusCode
    except ImportError:  # a tracer written against the library's duck-typed calls
        otel_span.set_status(status_code=2, description=str(error))
    else:
        otel_span.set_status(Status(StatusCode.ERROR, str(error)))
    otel_span.record_exception(error)


class TracingHooks(CadenceHooks):
    """A span per cadence (``cadence:<name>``, attribute ``cadence.name``) and per note
    (``note:<name>``, child of the cadence's span, attributes ``note.name`` and
    ``note.duration_ms``), sent to an OpenTelemetry-style ``tracer`` if given and kept in
    ``spans`` either way. Concurrent runs sharing the hook keep their spans apart."""

    def __init__(self, tracer: Any = None) -> None:
        self.tracer = tracer
        self.spans: list[Span] = []
        self._open: dict[tuple[int, str, str], tuple[Span, Any]] = {}

    def _start(self, kind: str, name: str) -> None:
        run = _run_key()
        span = Span(name, kind, time.perf_counter(), run)
        otel = None
        if self.tracer is not None:
            if kind == "note":
                parent = self._open.get((run, "cadence", _cadence_name()))
                otel = self.tracer.start_span(f"note:{name}", **_parent(parent))
                otel.set_attribute("note.name", name)
            else:
                otel = self.tracer.start_span(f"cadence:{name}")
                otel.set_attribute("cadence.name", name)
        self._open[(run, kind, name)] = (span, otel)

    def _end(self, kind: str, name: str, error: BaseException | None, duration: float) -> None:
        entry = self._open.pop((_run_key(), kind, name), None)
        if entry is None:
            return
        span, otel = entry
        span.end = time.perf_counter()
        span.error = error
        self.spans.append(span)
        if otel is not None:
            if kind == "note":
                otel.set_attribute("note.duration_ms", duration * 1000)
            if error is not None:
                _mark_failed(otel, error)
            otel.end()

    def before_cadence(self, cadence_name: str, score: Any) -> None:
        self._start("cadence", cadence_name)

    def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        self._end("cadence", cadence_name, error, duration)

    def before_note(self, note_name: str, score: Any) -> None:
        self._start("note", note_name)

    def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        self._end("note", note_name, error, duration)


def _cadence_name() -> str:
    info = current_run.get()
    return info.cadence_name if info is not None else ""


def _parent(entry: tuple[Span, Any] | None) -> dict[str, Any]:
    """How to name the parent span: an OpenTelemetry context when the API is installed (its
    ``start_span`` takes ``context=``), else the library's ``parent=`` keyword."""
    if entry is None or entry[1] is None:
        return {}
    try:
        from opentelemetry import trace
    except ImportError:
        return {"parent": entry[1]}
    return {"context": trace.set_span_in_context(entry[1])}


class DebugHooks(CadenceHooks):
    """Prints each cadence and note with timings and the score (as the library does), and keeps
    the score before and after every note in ``records``."""

    def __init__(self, show_score: bool = True, show_timing: bool = True) -> None:
        self.show_score = show_score
        self.show_timing = show_timing
        self.records: list[dict[str, Any]] = []

    def before_cadence(self, cadence_name: str, score: Any) -> None:
        print(f"\n{'=' * 60}")  # noqa: T201 - printing is what this hook is for
        print(f"CADENCE: {cadence_name}")  # noqa: T201
        print(f"{'=' * 60}")  # noqa: T201
        if self.show_score:
            print(f"Initial score: {score}")  # noqa: T201
        print()  # noqa: T201

    def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        print()  # noqa: T201
        print(f"CADENCE FAILED: {error}" if error is not None else "CADENCE COMPLETED")  # noqa: T201
        if self.show_timing:
            print(f"Duration: {duration:.3f}s")  # noqa: T201
        if self.show_score:
            print(f"Final score: {score}")  # noqa: T201
        print(f"{'=' * 60}\n")  # noqa: T201

    def before_note(self, note_name: str, score: Any) -> None:
        self.records.append({"note": note_name, "phase": "before", "score": _state(score)})
        print(f"→ {note_name}")  # noqa: T201

    def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        self.records.append(
            {"note": note_name, "phase": "after", "score": _state(score), "error": error}
        )
        timing = f" ({duration:.3f}s)" if self.show_timing else ""
        print(f"  {'✗' if error is not None else '✓'}{timing}")  # noqa: T201
        if error is not None:
            print(f"    Error: {error}")  # noqa: T201
        if self.show_score:
            print(f"    Score: {score}")  # noqa: T201


def _state(score: Any) -> Any:
    to_dict = getattr(score, "to_dict", None)
    return to_dict() if callable(to_dict) else to_jsonable(score)


__all__ = ["DebugHooks", "LoggingHooks", "MetricsHooks", "Span", "TimingHooks", "TracingHooks"]
