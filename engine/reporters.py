"""Reporters: callables ``(note_name, elapsed_seconds, score)`` given to ``Cadence.with_reporter``.

A cadence calls its reporters after every measure and once more at the end with the cadence's
own name and total time. Console and JSON reporters need nothing; the Prometheus and
OpenTelemetry ones need their packages and say so, with the install command, when missing.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from .score import to_jsonable


class MissingDependencyError(ImportError):
    """An optional integration was used without its package installed."""

    def __init__(self, package: str, feature: str) -> None:
        self.package = package
        super().__init__(
            f"{feature} needs the '{package}' package: pip install {package}", name=package
        )


class ConsoleReporter:
    """Writes ``[cadence] name: 1.234ms`` lines to a stream (stdout by default)."""

    def __init__(self, stream: IO[str] | None = None, prefix: str = "[cadence]") -> None:
        self.stream = stream
        self.prefix = prefix

    def __call__(self, note_name: str, elapsed: float, score: Any) -> None:
        self.report(note_name, elapsed, score)

    def report(self, note_name: str, elapsed: float, score: Any) -> None:
        stream = self.stream or sys.stdout
        stream.write(f"{self.prefix} {note_name}: {elapsed * 1000:.3f}ms\n")


class JsonReporter:
    """Writes one JSON object per report (``note``, ``elapsed``, ``timestamp``, optional ``score``)."""

    def __init__(self, stream: IO[str] | None = None, include_score: bool = False) -> None:
        self.stream = stream
        self.include_score = include_score

    def __call__(self, note_name: str, elapsed: float, score: Any) -> None:
        self.report(note_name, elapsed, score)

    def report(self, note_name: str, elapsed: float, score: Any) -> None:
        record: dict[str, Any] = {"note": note_name, "elapsed": elapsed, "timestamp": time.time()}
        if self.include_score:
            to_dict = getattr(score, "to_dict", None)
            record["score"] = to_dict() if callable(to_dict) else to_jsonable(score)
        (self.stream or sys.stdout).write(json.dumps(record, sort_keys=True, default=str) + "\n")


console_reporter = ConsoleReporter()
json_reporter = JsonReporter()


class PrometheusReporter:
    """Records ``<prefix>_note_duration_seconds`` (histogram) and ``<prefix>_note_total`` (counter),
    both labelled by ``note``, in ``registry`` (prometheus-client's default registry if omitted)."""

    def __init__(self, prefix: str = "cadence", registry: Any = None) -> None:
        try:
            import prometheus_client
        except ImportError as exc:
            raise MissingDependencyError("prometheus-client", "PrometheusReporter") from exc
        kwargs = {"registry": registry} if registry is not None else {}
        self.duration = prometheus_client.Histogram(
            f"{prefix}_note_duration_seconds", "Time spent in each cadence note", ["note"], **kwargs
        )
        self.count = prometheus_client.Counter(
            f"{prefix}_note", "Cadence notes run", ["note"], **kwargs
        )

    def report(self, note_name: str, elapsed: float, score: Any) -> None:
        self.duration.labels(note=note_name).observe(elapsed)
        self.count.labels(note=note_name).inc()

    __call__ = report


class OpenTelemetryReporter:
    """Emits one span per report, back-dated to the measured duration."""

    def __init__(self, service_name: str = "cadence", tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:
            raise MissingDependencyError("opentelemetry-api", "OpenTelemetryReporter") from exc
        if tracer_provider is None:
            tracer_provider = _sdk_provider(service_name) or trace.get_tracer_provider()
        self.service_name = service_name
        self.tracer = tracer_provider.get_tracer("engine.reporters")

    def report(self, note_name: str, elapsed: float, score: Any) -> None:
        end = time.time_ns()
        span = self.tracer.start_span(
            note_name,
            start_time=end - int(elapsed * 1e9),
            attributes={"cadence.note": note_name, "service.name": self.service_name},
        )
        span.end(end_time=end)

    __call__ = report


def _sdk_provider(service_name: str) -> Any:
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return None  # only the API is installed: use whatever provider the application set
    return TracerProvider(resource=Resource.create({"service.name": service_name}))


__all__ = [
    "ConsoleReporter",
    "JsonReporter",
    "MissingDependencyError",
    "OpenTelemetryReporter",
    "PrometheusReporter",
    "console_reporter",
    "json_reporter",
]
