"""The orphan sweep on Celery beat (CELERY_BEAT_SCHEDULE "runs-orphans")."""

from __future__ import annotations

from celery import shared_task

from engine.runs.orphans import orphans_sweep


@shared_task(name="runs.orphans_sweep", ignore_result=True)
def runs_orphans_sweep() -> int:
    return orphans_sweep()
