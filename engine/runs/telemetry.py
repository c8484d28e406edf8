"""What the turn pipeline tells metrics and traces about a run: that it started, and how it ended.

Called from engine/runs/pipeline.py; never raises (telemetry that failed must not fail a run).
Metrics are recorded in the calling thread (a few memory-mapped writes); a trace is only queued
here and built on its own thread (engine/runs/traces.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from engine.runs import metrics, traces

logger = logging.getLogger(__name__)


def run_started(*, org: str, orchestrator: str) -> tuple[str, str] | None:
    try:
        return metrics.run_started(org=org, orchestrator=orchestrator)
    except Exception:
        logger.exception("run metrics failed")
        return None


def run_ended(
    *,
    org: str,
    trigger: str,
    recorder: Any,
    outcome: Any,
    pair: tuple[str, str] | None,
) -> None:
    """`recorder` is None when no run was recorded (the runtime could not be acquired)."""
    error_code = outcome.error.code if outcome.error is not None else ""
    orchestrator = recorder.fields["orchestrator_slug"] if recorder is not None else ""
    duration_ms = getattr(recorder, "duration_ms", None)
    try:
        metrics.run_finished(
            pair=pair,
            recorded=recorder is not None,
            org=org,
            orchestrator=orchestrator,
            trigger=trigger,
            status=outcome.status,
            duration_s=duration_ms / 1000 if duration_ms is not None else None,
            usage=outcome.usage or {},
            error_code=error_code,
            steps=recorder.events if recorder is not None else [],
        )
    except Exception:
        logger.exception("run metrics failed", extra={"run": outcome.run_id})
    if recorder is None or not traces.enabled():
        return
    try:
        ended = time.time()
        started = ended - (time.perf_counter() - recorder.started)
        if duration_ms is not None:
            ended = started + duration_ms / 1000
        traces.submit(
            traces.RunTrace(
                run_id=recorder.run_id,
                org=org,
                orchestrator=orchestrator,
                orchestrator_id=str(recorder.fields.get("orchestrator_id") or ""),
                trigger=trigger,
                status=outcome.status,
                conversation_id=str(recorder.fields.get("conversation_id") or ""),
                started=started,
                ended=ended,
                usage=dict(outcome.usage or {}),
                error=outcome.error.message if outcome.error is not None else "",
                error_code=error_code,
                steps=list(recorder.events),
            )
        )
    except Exception:
        logger.exception("queueing a run's trace failed", extra={"run": outcome.run_id})
