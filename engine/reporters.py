"""Reporters: callables ``(note_name, elapsed_seconds, score)`` given to ``Cadence.with_reporter``.

A cadence calls its reporters after every note (a group's notes as ``group[i]``, a split's as
``route_if[i]``/``route_else[i]``) and once more at the end with ``"<cadence>:TOTAL"`` and the
total time, as the library does. ``console_reporter`` and ``json_reporter`` print the library's
lines; the classes are the engine's configurable versions. The Prometheus and OpenTelemetry
ones need their packages and say so, with the install command, when missing.
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


TOTAL_SUFFIX = ":TOTAL"


def split_total(name: str) -> tuple[str, bool]:
    """(name, is_total): ``"checkout:TOTAL"`` -> ``("checkout", True)``."""
    if name.endswith(TOTAL_SUFFIX):
        return name[: -len(TOTAL_SUFFIX)], True
    return name, False


def console_reporter(beat_name: str, elapsed: float, context: Any) -> None:
    """Prints ``  note: 1.23ms`` per note and ``[cadence] TOTAL: 4.56ms`` at the end."""
    name, total = split_total(beat_name)
    if total:
        print(f"[{name}] TOTAL: {elapsed * 1000:.2f}ms")  # noqa: T201 - a console reporter
    else:
        print(f"  {name}: {elapsed * 1000:.2f}ms")  # noqa: T201


def json_reporter(beat_name: str, elapsed: float, context: Any) -> None:
    """Prints ``{"beat": ..., "elapsed_ms": ..., "type": "beat" | "cadence_total"}`` lines."""
    name, total = split_total(beat_name)
    record = {
        "beat": name,
        "elapsed_ms": round(elapsed * 1000, 2),
        "type": "cadence_total" if total else "beat",
    }
    print(json.dumps(record))  # noqa: T201


class ConsoleReporter:
    """Writes ``[cadence] name: 1.234ms`` lines to a stream (stdout by default)."""

    def __init__(self, stream: IO[str] | None = None, prefix: str = "[cadence]") -> None:
        self.stream = stream
        self.prefix = prefix

    def __call__(self, note_name: str, elapsed: float, score: Any) -> None:
        self.report(note_name, elapsed, score)

    def report(self, note_name: str, elapsed: float, score: Any) -> None:
        stream = self.stream or sys.stdout
        name, total = split_total(note_name)
        label = f"{name} TOTAL" if total else name
        stream.write(f"{self.prefix} {label}: {elapsed * 1000:.3f}ms\n")


class JsonReporter:
    """Writes one JSON object per report (``note``, ``elapsed``, ``timestamp``, optional ``score``)."""

    def __init__(self, stream: IO[str] | None = None, include_score: bool = False) -> None:
        self.stream = stream
        self.include_score = include_score

    def __call__(self, note_name: str, elapsed: float, score: Any) -> None:
        self.report(note_name, elapsed, score)

    def report(self, note_name: str, elapsed: float, score: Any) -> None:
        name, total = split_total(note_name)
        record: dict[str, Any] = {
            "note": name,
            "type": "cadence_total" if total else "note",
            "elapsed": elapsed,
            "timestamp": time.time(),
        }
        if self.include_score:
            to_dict = getattr(score, "to_dict", None)
            record["score"] = to_dict() if callable(to_dict) else to_jsonable(score)
        (self.stream or sys.stdout).write(json.dumps(record, sort_keys=True, default=str) + "\n")


class PrometheusReporter:
    """Records ``<prefix>_note_duration_seconds`` (histogram) and ``<prefix>_note_total`` (counter),
    labelled by ``note``, and ``<prefix>_cadence_duration_seconds`` / ``<prefix>_cadence_total``
    labelled by ``cadence`` for the totals, in ``registry`` (prometheus-client's default
    registry if omitted)."""

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
        self.cadence_duration = prometheus_client.Histogram(
            f"{prefix}_cadence_duration_seconds",
            "Time spent in each cadence",
            ["cadence"],
            **kwargs,
        )
        self.cadence_count = prometheus_client.Counter(
            f"{prefix}_cadence", "Cadences run", ["cadence"], **kwargs
        )

    def report(self, note_name: str, elapsed: float, score: Any) -> None:
        name, total = split_total(note_name)
        if total:
            self.cadence_duration.labels(cadence=name).observe(elapsed)
            self.cadence_count.labels(cadence=name).inc()
        else:
            self.duration.labels(note=name).observe(elapsed)
            self.count.labels(note=name).inc()

    __call__ = report


class OpenTelemetryReporter:
    """Emits one span per report, back-dated to the measured duration."""

    def __init__(
        self,
        service_name: str = "cadence",
        tracer_provider: Any = None,
        *,
        include_state: bool = False,
    ) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:
            raise MissingDependencyError("opentelemetry-api", "OpenTelemetryReporter") from exc
        if tracer_provider is None:
            tracer_provider = _sdk_provider(service_name) or trace.get_tracer_provider()
        self.service_name = service_name
        self.include_state = include_state
        self.tracer = tracer_provider.get_tracer("engine.reporters")

    def report(self, note_name: str, elapsed: float, score: Any) -> None:
        end = time.time_ns()
        name, total = split_total(note_name)
        key = "cadence.name" if total else "cadence.note"
        attributes: dict[str, Any] = {key: name, "service.name": self.service_name}
        if self.include_state:  # the score's plain fields, as the library's include_state does
            for field, value in (score_payload_of(score) or {}).items():
                if isinstance(value, (str, bool, int, float)):
                    attributes[f"score.{field}"] = value
        span = self.tracer.start_span(
            name, start_time=end - int(elapsed * 1e9), attributes=attributes
        )
        span.end(end_time=end)

    __call__ = report


def score_payload_of(score: Any) -> Any:
    to_dict = getattr(score, "to_dict", None)
    return to_dict() if callable(to_dict) else to_jsonable(score)


def prometheus_reporter(prefix: str = "cadence", registry: Any = None) -> PrometheusReporter:
    """A :class:`PrometheusReporter`, for ``.with_reporter(prometheus_reporter("myapp"))``."""
    return PrometheusReporter(prefix=prefix, registry=registry)


def opentelemetry_reporter(
    service_name: str = "cadence", include_state: bool = False, tracer_provider: Any = None
) -> OpenTelemetryReporter:
    """An :class:`OpenTelemetryReporter`, for ``.with_reporter(opentelemetry_reporter("svc"))``."""
    return OpenTelemetryReporter(service_name, tracer_provider, include_state=include_state)


class TracingContext:
    """A parent span around some work (``with TracingContext("checkout", {"order": 1}):``),
    marked as failed if the block raises."""

    def __init__(
        self,
        operation_name: str,
        attributes: dict[str, Any] | None = None,
        service_name: str = "cadence",
    ) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:
            raise MissingDependencyError("opentelemetry-api", "TracingContext") from exc
        self.operation_name = operation_name
        self.attributes = dict(attributes or {})
        self._tracer = trace.get_tracer(service_name)
        self._span: Any = None

    def __enter__(self) -> TracingContext:
        self._span = self._tracer.start_span(self.operation_name, attributes=self.attributes)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        from opentelemetry.trace import Status, StatusCode

        if self._span is None:
            return
        if exc_type is not None:
            self._span.set_status(Status(StatusCode.ERROR, str(exc)))
            self._span.record_exception(exc)
        else:
            self._span.set_status(Status(StatusCode.OK))
        self._span.end()

    def set_attribute(self, key: str, value: Any) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)

    def add_event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        if self._span is not None:
            self._span.add_event(name, attributes=attributes or {})


class MetricsMiddleware:
    """ASGI middleware serving prometheus-client's metrics at ``path`` (default ``/metrics``)
    and passing every other request on."""

    def __init__(self, app: Any, path: str = "/metrics", registry: Any = None) -> None:
        try:
            import prometheus_client
        except ImportError as exc:
            raise MissingDependencyError("prometheus-client", "MetricsMiddleware") from exc
        self.app = app
        self.path = path
        kwargs = {"registry": registry} if registry is not None else {}
        self._metrics_app = prometheus_client.make_asgi_app(**kwargs)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and scope.get("path") == self.path:
            await self._metrics_app(scope, receive, send)
        else:
            await self.app(scope, receive, send)


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
    "MetricsMiddleware",
    "MissingDependencyError",
    "OpenTelemetryReporter",
    "PrometheusReporter",
    "TracingContext",
    "console_reporter",
    "json_reporter",
    "opentelemetry_reporter",
    "prometheus_reporter",
]
