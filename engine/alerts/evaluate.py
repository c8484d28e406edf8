"""What fires: each rule kind judged against a finished run, or against a window of runs.

Pure reads in the current schema; engine/alerts/services.py records what fires and notifies.

`log_match` patterns run on the `regex` module with a time limit per search, and on a bounded
amount of text per source, so a catastrophic pattern (`(a+)+$`) costs at most that limit rather
than a worker. The text a pattern sees comes from text sources: the run's error, its steps'
errors, and its log lines (engine/runs/runlog.py's `log_texts`, registered by
engine/alerts/apps.py); another source plugs in with `text_source_register`.

A team's rule (`team` set) judges only the runs its team sees, by the one team rule
(tenants/teams/scoping.py, as a team-limited caller): runs of the team's own orchestrators, of
the organization-wide ones, and of orchestrators shared with the team (any level). A run of
another team's orchestrator never fires it, so its notifications and history carry nothing of
another team's runs; windows (failure rate, tokens) count those runs only. The run's own team
(recorded when it ran) decides, as it does for run views. Organization-wide rules judge every
run, as before. Sharing a rule with another team shows it to that team; what it judges stays
its own team's runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import regex
from django.db.models import BigIntegerField, Count, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from engine.alerts.models import AlertRule
from engine.models import Run, RunEvent

logger = logging.getLogger(__name__)

MAX_PATTERN_CHARS = 500
SEARCH_TIMEOUT_SECONDS = 0.05
# Per text a source yields: an error is rarely longer; a log line never should be.
MAX_TEXT_CHARS = 16_384
MAX_TEXTS = 1_000


@dataclass
class Finding:
    key: str  # one event per rule and key (a run, a window's period)
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None


# --- log_match ------------------------------------------------------------------------------

TextSource = Callable[[Run], Iterable[tuple[str, str]]]  # (where, text) pairs of one run


def _run_error(run: Run) -> Iterable[tuple[str, str]]:
    if run.error:
        yield "run.error", run.error


def _step_errors(run: Run) -> Iterable[tuple[str, str]]:
    rows = RunEvent.objects.filter(run=run).exclude(error="").order_by("seq")
    for seq, name, error in rows.values_list("seq", "name", "error")[:MAX_TEXTS]:
        yield f"step {seq} ({name}).error", error


_sources: list[TextSource] = [_run_error, _step_errors]


def text_source_register(source: TextSource) -> TextSource:
    """Add texts every `log_match` rule searches (a run's log lines: yield ("log <seq>", line))."""
    if source not in _sources:
        _sources.append(source)
    return source


class PatternError(ValueError):
    """A log_match pattern that is too long, does not compile, or cannot be searched safely."""


def pattern_compile(pattern: str) -> regex.Pattern:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(f"The pattern is longer than {MAX_PATTERN_CHARS} characters.")
    if not pattern:
        raise PatternError("The pattern is empty.")
    try:
        # VERSION0: Python `re` syntax; no flags from outside beyond what the pattern says.
        return regex.compile(pattern, regex.VERSION0)
    except (regex.error, OverflowError, RecursionError) as exc:
        raise PatternError(f"The pattern is not a valid regular expression: {exc}") from None


def pattern_search(compiled: regex.Pattern, text: str) -> regex.Match | None | bool:
    """The match, None, or False when the search ran out of time (counted as no match)."""
    try:
        return compiled.search(text[:MAX_TEXT_CHARS], timeout=SEARCH_TIMEOUT_SECONDS)
    except TimeoutError:
        return False


def _log_match(rule: AlertRule, run: Run) -> Finding | None:
    compiled = pattern_compile(rule.pattern)
    timed_out = 0
    seen = 0
    for source in list(_sources):
        for where, text in source(run):
            seen += 1
            if seen > MAX_TEXTS:
                break
            found = pattern_search(compiled, text)
            if found is False:
                timed_out += 1
                continue
            if found is not None:
                return Finding(
                    key=f"run:{run.id}",
                    reason=f"{where} matches {rule.pattern!r}: {text[:300]}",
                    details={"where": where, "match": found.group(0)[:300]},
                    run_id=str(run.id),
                )
    if timed_out:
        logger.warning("alert pattern timed out", extra={"rule": str(rule.id), "run": str(run.id)})
    return None


# --- kinds about one run --------------------------------------------------------------------


def _run_failed(rule: AlertRule, run: Run) -> Finding | None:
    if run.status != Run.Status.FAILED:
        return None
    if rule.error_code and run.error_code != rule.error_code:
        return None
    return Finding(
        key=f"run:{run.id}",
        reason=f"Run of {run.orchestrator_slug} failed: {run.error or run.error_code}"[:2000],
        details={"error_code": run.error_code},
        run_id=str(run.id),
    )


def _step_failed(rule: AlertRule, run: Run) -> Finding | None:
    steps = RunEvent.objects.filter(run=run, outcome="failed").order_by("seq")
    if rule.error_code:
        # A step has no code of its own: the run's mapped code, or the step's error type.
        if run.error_code != rule.error_code:
            steps = steps.filter(error_type=rule.error_code)
    failed = list(steps.values("seq", "name", "kind", "error_type", "error")[:20])
    if not failed:
        return None
    first = failed[0]
    return Finding(
        key=f"run:{run.id}",
        reason=(
            f"Step {first['seq']} ({first['name']}) of a run of {run.orchestrator_slug} "
            f"failed: {first['error']}"
        )[:2000],
        details={
            "steps": [{k: s[k] for k in ("seq", "name", "kind", "error_type")} for s in failed],
            "error_code": run.error_code,
        },
        run_id=str(run.id),
    )


def _slow_run(rule: AlertRule, run: Run) -> Finding | None:
    if run.duration_ms is None or run.duration_ms <= rule.threshold_ms:
        return None
    return Finding(
        key=f"run:{run.id}",
        reason=(
            f"Run of {run.orchestrator_slug} took {run.duration_ms:.0f} ms "
            f"(over {rule.threshold_ms} ms)."
        ),
        details={"duration_ms": run.duration_ms, "threshold_ms": rule.threshold_ms},
        run_id=str(run.id),
    )


def _slow_step(rule: AlertRule, run: Run) -> Finding | None:
    slow = list(
        RunEvent.objects.filter(run=run, duration_ms__gt=rule.threshold_ms)
        .order_by("-duration_ms")
        .values("seq", "name", "kind", "duration_ms")[:20]
    )
    if not slow:
        return None
    first = slow[0]
    return Finding(
        key=f"run:{run.id}",
        reason=(
            f"Step {first['seq']} ({first['name']}) of a run of {run.orchestrator_slug} took "
            f"{first['duration_ms']:.0f} ms (over {rule.threshold_ms} ms)."
        ),
        details={"steps": slow, "threshold_ms": rule.threshold_ms},
        run_id=str(run.id),
    )


def _drift(rule: AlertRule, run: Run) -> Finding | None:
    from engine.trust.drift import run_drift

    drift = run_drift(run=run)
    if not drift["drifted"]:
        return None
    areas = sorted({change["area"] for change in drift["changes"]})
    return Finding(
        key=f"run:{run.id}",
        reason=(
            f"Run of {run.orchestrator_slug} ran a definition that differs from the "
            f"orchestrator's current one ({', '.join(areas) or 'changed'})."
        ),
        details={
            "snapshot": drift.get("snapshot"),
            "current": drift.get("current"),
            "changes": drift["changes"][:50],
        },
        run_id=str(run.id),
    )


_RUN_JUDGES: dict[str, Callable[[AlertRule, Run], Finding | None]] = {
    AlertRule.Kind.RUN_FAILED: _run_failed,
    AlertRule.Kind.STEP_FAILED: _step_failed,
    AlertRule.Kind.LOG_MATCH: _log_match,
    AlertRule.Kind.SLOW_RUN: _slow_run,
    AlertRule.Kind.SLOW_STEP: _slow_step,
    AlertRule.Kind.DRIFT: _drift,
}


def _team_runs(rule: AlertRule, runs):
    """`runs` narrowed to those the rule's team sees (the module's docstring); all for an
    organization-wide rule."""
    if rule.team_id is None:
        return runs
    from tenants.teams.scoping import scoped, team_own_scope

    return scoped(runs, team_own_scope(rule.team_id), shared_field="orchestrator_id")


def run_in_rule_scope(rule: AlertRule, run: Run) -> bool:
    if rule.team_id is None or run.team_id == rule.team_id:
        return True
    return _team_runs(rule, Run.objects.filter(pk=run.pk)).exists()


def run_findings(rule: AlertRule, run: Run) -> Finding | None:
    """What `rule` says about one finished run (None: nothing to report)."""
    if rule.orchestrator and rule.orchestrator != run.orchestrator_slug:
        return None
    if not run_in_rule_scope(rule, run):
        return None
    judge = _RUN_JUDGES.get(rule.kind)
    return judge(rule, run) if judge is not None else window_finding(rule, now=run.finished_at)


# --- kinds over a window --------------------------------------------------------------------


def _window_runs(rule: AlertRule, now: datetime):
    runs = _team_runs(
        rule,
        Run.objects.filter(
            started_at__gt=now - timedelta(seconds=rule.window_seconds), started_at__lte=now
        ),
    )
    if rule.orchestrator:
        runs = runs.filter(orchestrator_slug=rule.orchestrator)
    return runs


def _period_key(rule: AlertRule, now: datetime) -> str:
    # At most one event per window length: the period the judgement fell in names it.
    return f"window:{int(now.timestamp()) // rule.window_seconds}"


def window_finding(rule: AlertRule, *, now: datetime | None) -> Finding | None:
    from django.utils import timezone

    now = now or timezone.now()
    runs = _window_runs(rule, now)
    if rule.kind == AlertRule.Kind.FAILURE_RATE:
        counts = runs.filter(
            status__in=[Run.Status.SUCCEEDED, Run.Status.FAILED, Run.Status.CANCELLED]
        ).aggregate(total=Count("id"), failed=Count("id", filter=Q(status=Run.Status.FAILED)))
        total, failed = counts["total"], counts["failed"]
        if total == 0 or total < (rule.min_runs or 1) or failed / total < rule.failure_rate:
            return None
        return Finding(
            key=_period_key(rule, now),
            reason=(
                f"{failed} of {total} runs failed in the last {rule.window_seconds} s "
                f"({failed / total:.0%}, threshold {rule.failure_rate:.0%})."
            ),
            details={"failed": failed, "total": total, "rate": failed / total},
        )
    if rule.kind == AlertRule.Kind.TOKENS_OVER:
        used = (
            runs.aggregate(
                tokens=Sum(Cast(KT("usage__total_tokens"), output_field=BigIntegerField()))
            )["tokens"]
            or 0
        )
        if used <= rule.tokens:
            return None
        return Finding(
            key=_period_key(rule, now),
            reason=(
                f"{used} tokens used in the last {rule.window_seconds} s (over {rule.tokens})."
            ),
            details={"tokens": used, "limit": rule.tokens},
        )
    return None
