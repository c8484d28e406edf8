"""Alerts on the turn pipeline (engine/runs/pipeline.py): when a run's outcome commits, its
judgement is enqueued; nothing is judged inside the turn.

Inside the run's transaction, one indexed query asks whether the organization has any enabled
rule; only then is `alerts.evaluate_run` published, once the transaction has committed (so the
worker finds the run and its steps). A broker that cannot take the message costs an alert, never
the run: the failure is logged, and windowed rules are judged again by the beat sweep.
"""

from __future__ import annotations

import logging

from django.db import transaction

from engine.runs.pipeline import Turn, TurnExtension, TurnOutcome

logger = logging.getLogger(__name__)


class AlertingRuns(TurnExtension):
    def on_finish(self, turn: Turn, outcome: TurnOutcome) -> None:
        if not outcome.recorded:
            return
        from engine.alerts.services import rules_exist

        try:
            # A savepoint: a failing check (a schema not yet migrated) must not break the
            # transaction that records the run.
            with transaction.atomic():
                if not rules_exist():
                    return
        except Exception:
            logger.exception("alert rules not checked", extra={"run": turn.run_id})
            return
        schema_name, run_id = turn.request.schema_name, turn.run_id
        transaction.on_commit(lambda: _publish(schema_name, run_id))


def _publish(schema_name: str, run_id: str) -> None:
    from engine.alerts.tasks import enqueue, evaluate_run

    try:
        enqueue(evaluate_run, schema_name=schema_name, run_id=run_id)
    except Exception:
        logger.exception("alert evaluation not enqueued", extra={"run": run_id})


alerting_runs = AlertingRuns()
