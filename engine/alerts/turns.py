"""Alerts on the turn pipeline (engine/runs/pipeline.py): when a run's outcome commits, its
judgement is enqueued; nothing is judged inside the turn.

Inside the run's transaction, one indexed query asks whether the organization has any enabled
rule (its answer kept for RULES_TTL seconds per process, and forgotten at once when a rule is
saved or deleted in this process: a rule made on another server process applies to runs ending
from a second after it); only then is `alerts.evaluate_run` published, once the transaction has committed (so the
worker finds the run and its steps). A broker that cannot take the message costs an alert, never
the run: the failure is logged, and windowed rules are judged again by the beat sweep.
"""

from __future__ import annotations

import logging
import time

from django.db import connection, transaction

from cadence_site import greendb
from engine.runs.pipeline import Turn, TurnExtension, TurnOutcome

logger = logging.getLogger(__name__)

RULES_TTL = 1.0
_rules: dict[str, tuple[float, bool]] = {}  # schema → (until, whether it has an enabled rule)


def rules_forget(schema_name: str | None = None) -> None:
    """Forget what the organization's rules were (every organization's without a name)."""
    if schema_name is None:
        _rules.clear()
    else:
        _rules.pop(schema_name, None)


def _rules_exist(schema_name: str) -> bool:
    from engine.alerts.services import rules_exist

    now = time.monotonic()
    known = _rules.get(schema_name)
    if known is not None and known[0] > now:
        return known[1]
    # A savepoint: a failing check (a schema not yet migrated) must not break the transaction
    # that records the run.
    with transaction.atomic():
        found = rules_exist()
    _rules[schema_name] = (now + RULES_TTL, found)
    return found


class AlertingRuns(TurnExtension):
    def writes_on_finish(self, turn: Turn, outcome: TurnOutcome) -> bool:
        return False  # a read (its rules, cached) and an on_commit callback

    def on_finish(self, turn: Turn, outcome: TurnOutcome) -> None:
        if not outcome.recorded:
            return
        try:
            if not _rules_exist(connection.schema_name):
                return
        except Exception:
            logger.exception("alert rules not checked", extra={"run": turn.run_id})
            return
        schema_name, run_id = turn.request.schema_name, turn.run_id
        # The broker, from the run's write: on a thread when that write is a green call.
        transaction.on_commit(lambda: greendb.blocking(_publish, schema_name, run_id))


def _publish(schema_name: str, run_id: str) -> None:
    from engine.alerts.tasks import enqueue, evaluate_run

    try:
        enqueue(evaluate_run, schema_name=schema_name, run_id=run_id)
    except Exception:
        logger.exception("alert evaluation not enqueued", extra={"run": run_id})


alerting_runs = AlertingRuns()
