"""Runs and steps as JSON objects, and a run as OTLP JSON (one trace, a span per step).

The OTLP form follows the OpenTelemetry GenAI semantic conventions: a model call is a
`chat <model>` span with `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`
and `gen_ai.usage.input_tokens/output_tokens`; a tool call an `execute_tool <name>` span with
`gen_ai.tool.name`; the run the root span (`invoke_agent <orchestrator>`). The trace id is the
run's id; a step's span id is derived from the run id and its sequence number.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from engine.models import Run, RunEvent, RunLog
from engine.runs.selectors import step_payload


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def run_output(run: Run, *, detail: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(run.id),
        "status": run.status,
        "trigger": run.trigger,
        "orchestrator": {
            "id": str(run.orchestrator_id) if run.orchestrator_id else None,
            "slug": run.orchestrator_slug,
        },
        "conversation": str(run.conversation_id) if run.conversation_id else None,
        "principal": run.principal,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration_ms": run.duration_ms,
        "usage": run.usage,
        "error": {"code": run.error_code, "message": run.error} if run.error else None,
        "replay_of": str(run.replay_of_id) if run.replay_of_id else None,
        "replay_step": run.replay_step,
    }
    if detail:
        out.update(
            input=run.input,
            output=run.output,
            config_hash=run.config_hash,
            environment=run.environment,
        )
    return out


def step_fields(
    *,
    seq: int,
    parent: int | None,
    name: str,
    kind: str,
    status: str,
    started_at: str | None,
    finished_at: str | None,
    duration_ms: float | None,
    data: dict[str, Any],
    error: str = "",
    error_type: str = "",
    stack: str = "",
    cpu_ms: float | None = None,
    memory_kb: int | None = None,
    truncated: bool = False,
) -> dict[str, Any]:
    """A step as the API shows it; the run socket's step frames are the same object
    (engine/runs/recorder.py builds them from a step in flight)."""
    return {
        "seq": seq,
        "parent": parent,
        "name": name,
        "kind": kind,
        "status": status,
        "started_at": started_at,
        "finished_at": finished_at,
        "duration_ms": duration_ms,
        "inputs": data.get("inputs"),
        "outputs": data.get("outputs"),
        "detail": {k: v for k, v in data.items() if k not in ("inputs", "outputs", "llm")},
        "llm": data.get("llm"),
        "error": (
            {"type": error_type, "message": error, "stack": stack} if error or error_type else None
        ),
        "resources": {"cpu_ms": cpu_ms, "memory_kb": memory_kb},
        "truncated": truncated,
    }


def step_output(step: RunEvent, *, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return step_fields(
        seq=step.seq,
        parent=step.parent_seq,
        name=step.name,
        kind=step.kind,
        status=step.outcome,
        started_at=_iso(step.started_at),
        finished_at=_iso(step.at),
        duration_ms=step.duration_ms,
        data=step.data if data is None else data,
        error=step.error,
        error_type=step.error_type,
        stack=step.stack,
        cpu_ms=step.cpu_ms,
        memory_kb=step.memory_kb,
        truncated=bool(step.payload),
    )


def log_output(line: RunLog, *, run_id: str, org_slug: str) -> dict[str, Any]:
    return {
        "cursor": line.cursor,
        "org": org_slug,
        "run": run_id,
        "step": line.step_seq,
        "level": line.level,
        "logger": line.logger,
        "message": line.message,
        "at": line.at.isoformat(),
        "worker": line.worker,
    }


def run_export(run: Run) -> dict[str, Any]:
    """The whole run: every step with its whole payload."""
    return {
        "run": run_output(run, detail=True),
        "steps": [
            step_output(step, data=step_payload(step=step)) for step in run.events.order_by("seq")
        ],
    }


# --- OTLP JSON ------------------------------------------------------------------------------


def _span_id(run: Run, seq: int) -> str:
    return hashlib.sha256(f"{run.id}:{seq}".encode()).hexdigest()[:16]


def _nanos(value: datetime | None) -> str:
    return str(int(value.timestamp() * 1_000_000_000)) if value is not None else "0"


def _attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        typed = {"boolValue": value}
    elif isinstance(value, int):
        typed = {"intValue": str(value)}
    elif isinstance(value, float):
        typed = {"doubleValue": value}
    else:
        typed = {"stringValue": str(value)}
    return {"key": key, "value": typed}


def _step_span(run: Run, step: RunEvent) -> dict[str, Any]:
    llm = step.data.get("llm") if isinstance(step.data, dict) else None
    attributes = [_attr("cadence.step.seq", step.seq), _attr("cadence.step.kind", step.kind)]
    if step.kind == "llm_call" and isinstance(llm, dict):
        name = f"chat {llm.get('model', '')}".strip()
        attributes += [
            _attr("gen_ai.operation.name", "chat"),
            _attr("gen_ai.provider.name", llm.get("provider", "")),
            _attr("gen_ai.request.model", llm.get("model", "")),
            _attr("gen_ai.usage.input_tokens", int(llm.get("tokens_in") or 0)),
            _attr("gen_ai.usage.output_tokens", int(llm.get("tokens_out") or 0)),
        ]
        for key, value in (llm.get("parameters") or {}).items():
            if value is not None:
                attributes.append(_attr(f"gen_ai.request.{key}", value))
    elif step.kind == "tool_call":
        name = f"execute_tool {step.name}"
        attributes += [
            _attr("gen_ai.operation.name", "execute_tool"),
            _attr("gen_ai.tool.name", step.name),
        ]
    else:
        name = step.name
    if step.error_type:
        attributes.append(_attr("error.type", step.error_type))
    started = step.started_at or step.at
    ended = (
        step.at if step.duration_ms is None else started + timedelta(milliseconds=step.duration_ms)
    )
    return {
        "traceId": run.id.hex,
        "spanId": _span_id(run, step.seq),
        "parentSpanId": _span_id(run, step.parent_seq if step.parent_seq else 0),
        "name": name,
        "kind": 3 if step.kind == "llm_call" else 1,  # CLIENT for model calls, INTERNAL otherwise
        "startTimeUnixNano": _nanos(started),
        "endTimeUnixNano": _nanos(ended),
        "attributes": attributes,
        "status": {"code": 2, "message": step.error[:500]} if step.outcome == "failed" else {},
    }


def run_otlp(run: Run) -> dict[str, Any]:
    root = {
        "traceId": run.id.hex,
        "spanId": _span_id(run, 0),
        "name": f"invoke_agent {run.orchestrator_slug}",
        "kind": 2,  # SERVER
        "startTimeUnixNano": _nanos(run.started_at),
        "endTimeUnixNano": _nanos(run.finished_at or run.started_at),
        "attributes": [
            _attr("gen_ai.operation.name", "invoke_agent"),
            _attr("gen_ai.agent.name", run.orchestrator_slug),
            _attr("gen_ai.agent.id", str(run.orchestrator_id or "")),
            _attr("cadence.run.trigger", run.trigger),
            _attr("gen_ai.usage.input_tokens", int(run.usage.get("prompt_tokens", 0))),
            _attr("gen_ai.usage.output_tokens", int(run.usage.get("completion_tokens", 0))),
        ],
        "status": {"code": 2, "message": run.error[:500]} if run.status == "failed" else {},
    }
    if run.error_code:
        root["attributes"].append(_attr("error.type", run.error_code))
    spans = [root] + [_step_span(run, step) for step in run.events.order_by("seq")]
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attr("service.name", "cadence")]},
                "scopeSpans": [{"scope": {"name": "cadence.runs"}, "spans": spans}],
            }
        ]
    }
