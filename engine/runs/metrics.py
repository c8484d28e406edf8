"""Prometheus metrics of runs (served at /metrics, cadence_site/metrics.py).

Recorded once per run, when it ends, from what the recorder already holds in memory (its steps,
the outcome): nothing is added per token or per step while the run streams. Labels from tenants'
data are capped per process (cadence_site.metrics.LabelCap).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from cadence_site.metrics import OTHER, LabelCap

_DURATIONS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_ORG_ORCH = ["org", "orchestrator"]

RUNS = Counter(
    "cadence_runs",
    "Runs that ended, by outcome status (succeeded, failed, cancelled) and trigger.",
    [*_ORG_ORCH, "trigger", "status"],
)
RUNS_IN_PROGRESS = Gauge(
    "cadence_runs_in_progress",
    "Runs started and not yet ended (summed over the live processes).",
    _ORG_ORCH,
    multiprocess_mode="livesum",
)
RUN_DURATION = Histogram(
    "cadence_run_duration_seconds", "Wall time of a run.", _ORG_ORCH, buckets=_DURATIONS
)
STEP_DURATION = Histogram(
    "cadence_step_duration_seconds",
    "Wall time of a step (note, branch, child cadence, model call, tool call), by kind and status.",
    [*_ORG_ORCH, "kind", "status"],
    buckets=_DURATIONS,
)
TOKENS = Counter(
    "cadence_llm_tokens",
    "Model tokens a run used, by direction (input: prompt, output: completion).",
    [*_ORG_ORCH, "direction"],
)
TOOL_CALLS = Counter(
    "cadence_tool_calls", "Tool calls made by runs, by status.", [*_ORG_ORCH, "status"]
)
ERRORS = Counter(
    "cadence_run_errors",
    "Runs that ended failed, by error code (turns refused before a run was recorded included).",
    [*_ORG_ORCH, "code"],
)

_orgs = LabelCap()
_orchestrators = LabelCap()
_codes = LabelCap()
# Labelled children by their label values: `.labels()` costs more than the observation itself.
_children: dict[tuple, Any] = {}


def _child(metric: Any, *values: str) -> Any:
    key = (metric, *values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


_STEP_KINDS = frozenset({"note", "sync", "split", "child", "llm_call", "tool_call", "step"})
_STEP_STATUSES = frozenset({"completed", "failed", "interrupted", "running"})


def labels(org: str, orchestrator: str) -> tuple[str, str]:
    """The capped (org, orchestrator) pair: an orchestrator's name counts once per organization."""
    org_label = _orgs(org)
    if org_label == OTHER:
        return OTHER, OTHER
    pair = _orchestrators(f"{org_label}/{orchestrator or 'none'}")
    return org_label, ((orchestrator or "none") if pair != OTHER else OTHER)


def run_started(*, org: str, orchestrator: str) -> tuple[str, str]:
    pair = labels(org, orchestrator)
    RUNS_IN_PROGRESS.labels(*pair).inc()
    return pair


def run_finished(
    *,
    pair: tuple[str, str] | None,
    recorded: bool,
    org: str,
    orchestrator: str,
    trigger: str,
    status: str,
    duration_s: float | None,
    usage: dict[str, Any],
    error_code: str,
    steps: list[Any],
) -> None:
    """`pair` is what run_started returned (None: nothing was counted in progress); `recorded`
    whether a run was recorded (not when the runtime could not be acquired: only the error
    counts); `steps` are the recorder's rows (kind, outcome, duration_ms)."""
    if pair is not None:
        RUNS_IN_PROGRESS.labels(*pair).dec()
    org_label, orch_label = pair or labels(org, orchestrator)
    if status == "failed":
        ERRORS.labels(org_label, orch_label, _codes(error_code or "unknown")).inc()
    if not recorded:
        return
    RUNS.labels(org_label, orch_label, trigger, status).inc()
    if duration_s is not None:
        RUN_DURATION.labels(org_label, orch_label).observe(duration_s)
    for direction, key in (("input", "prompt_tokens"), ("output", "completion_tokens")):
        count = usage.get(key) or 0
        if isinstance(count, int) and count > 0:
            TOKENS.labels(org_label, orch_label, direction).inc(count)
    for step in steps:
        kind = step.kind if step.kind in _STEP_KINDS else "step"
        outcome = step.outcome if step.outcome in _STEP_STATUSES else "completed"
        if step.duration_ms is not None:
            _child(STEP_DURATION, org_label, orch_label, kind, outcome).observe(
                step.duration_ms / 1000
            )
        if kind == "tool_call":
            _child(TOOL_CALLS, org_label, orch_label, outcome).inc()
