"""OpenTelemetry traces of runs, exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; without it nothing is imported and a run's end costs
one dictionary lookup.

A trace is built from the recorded run when it ends, never while it streams: a span for the run
(`invoke_agent <orchestrator>`) and a child span per step, nested as the steps were (parent_seq),
with the steps' own start and end times. The trace id is the run's id, so a trace and the run
page (or `GET …/runs/<id>/export/?as=otlp`) name each other. Attributes follow the OpenTelemetry
GenAI semantic conventions: a model call is `chat <model>` with `gen_ai.operation.name`,
`gen_ai.provider.name` (and the older `gen_ai.system`), `gen_ai.request.model`, its parameters,
`gen_ai.usage.input_tokens/output_tokens` and `gen_ai.response.finish_reasons`; a tool call
`execute_tool <name>` with `gen_ai.tool.name`. No prompt, reply, input or output value is put in
a span (the conventions make content opt-in; runs keep it in their own, access-checked records).

Spans are built on a thread of their own from a bounded queue (a burst past QUEUE_MAX runs drops
traces, never slows runs), then batched and sent by the SDK's BatchSpanProcessor (its OTEL_BSP_*
variables apply). `flush()` drains both; it runs at process exit and when a Celery worker
process stops. The standard OTEL_EXPORTER_OTLP_* variables (headers, timeout, compression,
certificates) and OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES configure the exporter.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import uuid
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

QUEUE_MAX = 10_000
_FLUSH_SECONDS = 10.0


def enabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


@dataclass(frozen=True)
class RunTrace:
    """What a trace is built from: plain values, taken from the recorder at the run's end."""

    run_id: str
    org: str
    orchestrator: str
    orchestrator_id: str
    trigger: str
    status: str
    conversation_id: str
    started: float  # epoch seconds
    ended: float
    usage: dict[str, Any]
    error: str
    error_code: str
    steps: list[Any]  # the recorder's rows: seq, parent_seq, kind, name, outcome, times, data


class _Exporter:
    def __init__(self) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.ids = _run_ids()
        # A provider of our own, not the global one: a library that instruments the process
        # (or a test) keeps its own provider, and ours never reads one it did not set.
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME")})
            if os.environ.get("OTEL_SERVICE_NAME")
            else Resource.create({"service.name": "cadence"}),
            id_generator=self.ids,
        )
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("cadence.runs")
        self.queue: queue.Queue[RunTrace | None] = queue.Queue(maxsize=QUEUE_MAX)
        self.dropped = 0
        self.thread = threading.Thread(target=self._work, name="cadence-run-traces", daemon=True)
        self.thread.start()

    def submit(self, trace: RunTrace) -> None:
        try:
            self.queue.put_nowait(trace)
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                logger.warning("run traces dropped: the export queue is full (%d)", self.dropped)

    def _work(self) -> None:
        while True:
            trace = self.queue.get()
            try:
                if trace is not None:
                    _emit(self.tracer, self.ids, trace)
            except Exception:
                logger.exception("building a run's trace failed", extra={"run": trace.run_id})
            finally:
                self.queue.task_done()

    def flush(self, timeout: float = _FLUSH_SECONDS) -> None:
        done = threading.Event()

        def wait() -> None:
            self.queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        done.wait(timeout)
        self.provider.force_flush(int(timeout * 1000))


_exporter: _Exporter | None = None
_lock = threading.Lock()


def _get() -> _Exporter:
    global _exporter
    if _exporter is None:
        with _lock:
            if _exporter is None:
                _exporter = _Exporter()
                atexit.register(flush)
    return _exporter


def submit(trace: RunTrace) -> None:
    """Queues a run's trace (call only when `enabled()`)."""
    _get().submit(trace)


def flush(timeout: float = _FLUSH_SECONDS) -> None:
    """Builds what is queued and sends every finished span; a no-op when tracing never started."""
    if _exporter is not None:
        _exporter.flush(timeout)


# --- building the spans -----------------------------------------------------------------------


def _run_ids() -> Any:
    """An id generator whose next root span's trace id is the run's id (span ids at random)."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class RunIds(RandomIdGenerator):
        def __init__(self) -> None:
            self._next = threading.local()

        def set_trace_id(self, value: int) -> None:
            self._next.trace_id = value

        def generate_trace_id(self) -> int:
            value = getattr(self._next, "trace_id", None)
            if value:
                self._next.trace_id = None
                return value
            return super().generate_trace_id()

        def is_trace_id_random(self) -> bool:
            return False

    return RunIds()


def _ns(epoch_seconds: float) -> int:
    return int(epoch_seconds * 1_000_000_000)


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None and v != ""}


def _emit(tracer: Any, ids: Any, run: RunTrace) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    try:
        ids.set_trace_id(uuid.UUID(run.run_id).int)
    except ValueError:
        ids.set_trace_id(0)
    usage = run.usage or {}
    root = tracer.start_span(
        f"invoke_agent {run.orchestrator}",
        context=trace.set_span_in_context(trace.INVALID_SPAN),
        kind=SpanKind.INTERNAL,
        start_time=_ns(run.started),
        attributes=_clean(
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": run.orchestrator,
                "gen_ai.agent.id": run.orchestrator_id,
                "gen_ai.conversation.id": run.conversation_id,
                "gen_ai.usage.input_tokens": _int(usage.get("prompt_tokens")),
                "gen_ai.usage.output_tokens": _int(usage.get("completion_tokens")),
                "cadence.org": run.org,
                "cadence.run.id": run.run_id,
                "cadence.run.trigger": run.trigger,
                "cadence.run.status": run.status,
                "error.type": run.error_code if run.status == "failed" else None,
            }
        ),
    )
    if run.status == "failed":
        root.set_status(Status(StatusCode.ERROR, (run.error or run.error_code)[:500]))
    spans: dict[int, Any] = {}
    for step in run.steps:
        parent = spans.get(step.parent_seq) if step.parent_seq else None
        name, kind = _step_name_kind(step, SpanKind)
        span = tracer.start_span(
            name,
            context=trace.set_span_in_context(parent or root),
            kind=kind,
            start_time=_ns(step.started_at),
            attributes=_step_attributes(step),
        )
        if step.outcome == "failed":
            span.set_status(Status(StatusCode.ERROR, (step.error or "")[:500]))
        spans[step.seq] = span
        ended = (
            step.started_at + step.duration_ms / 1000 if step.duration_ms is not None else step.at
        )
        span.end(end_time=_ns(ended))
    root.end(end_time=_ns(run.ended))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _step_name_kind(step: Any, span_kind: Any) -> tuple[str, Any]:
    llm = _llm(step)
    if step.kind == "llm_call":
        return f"chat {llm.get('model', '')}".strip(), span_kind.CLIENT
    if step.kind == "tool_call":
        return f"execute_tool {step.name}", span_kind.INTERNAL
    return step.name, span_kind.INTERNAL


def _llm(step: Any) -> dict[str, Any]:
    data = step.data if isinstance(step.data, dict) else {}
    llm = data.get("llm")
    return llm if isinstance(llm, dict) else {}


def _step_attributes(step: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "cadence.step.seq": step.seq,
        "cadence.step.kind": step.kind,
        "cadence.step.name": step.name,
        "cadence.step.status": step.outcome,
        "cadence.step.cpu_ms": step.cpu_ms,
        "cadence.step.memory_kb": step.memory_kb,
        "error.type": (step.error_type or "error") if step.outcome == "failed" else None,
    }
    if step.kind == "llm_call":
        llm = _llm(step)
        provider = str(llm.get("provider", ""))
        attributes.update(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider,
                "gen_ai.system": provider,
                "gen_ai.request.model": llm.get("model"),
                "gen_ai.usage.input_tokens": _int(llm.get("tokens_in")),
                "gen_ai.usage.output_tokens": _int(llm.get("tokens_out")),
                "cadence.llm.ttft_ms": llm.get("ttft_ms"),
            }
        )
        for key, value in (llm.get("parameters") or {}).items():
            if isinstance(value, int | float | str) and not isinstance(value, bool):
                attributes[f"gen_ai.request.{key}"] = value
        outputs = step.data.get("outputs") if isinstance(step.data, dict) else None
        reason = outputs.get("finish_reason") if isinstance(outputs, dict) else None
        if isinstance(reason, str) and reason:
            attributes["gen_ai.response.finish_reasons"] = [reason]
    elif step.kind == "tool_call":
        attributes.update({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": step.name})
    return _clean(attributes)
