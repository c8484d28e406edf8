"""Alert work on Celery: judging a finished run, judging windows (beat), notifying.

Tasks take the schema and ids, enter the schema themselves, and are safe to run twice: a cause
fires a rule once (AlertEvent's unique key), and a notification already delivered or given up is
not sent again. Deliveries are acks_late and retried with exponential backoff and jitter
(CADENCE_ALERT_RETRY_BASE_SECONDS doubling up to CADENCE_ALERT_RETRY_MAX_SECONDS, at most
CADENCE_ALERT_MAX_ATTEMPTS attempts); the last failure is kept on the event.
"""

from __future__ import annotations

import logging
import random

from celery import shared_task
from django.conf import settings
from django.db import OperationalError
from django_tenants.utils import schema_context

from engine.alerts import services

logger = logging.getLogger(__name__)


def enqueue(task, **kwargs) -> None:
    """Publish an alert task on CADENCE_ALERTS_QUEUE (Celery's default queue when empty)."""
    queue = getattr(settings, "CADENCE_ALERTS_QUEUE", "") or None
    task.apply_async(kwargs=kwargs, queue=queue)


@shared_task(
    name="alerts.evaluate_run",
    acks_late=True,
    # The database went away for a moment: judge again (firing is idempotent).
    autoretry_for=(OperationalError,),
    retry_backoff=1,
    retry_backoff_max=60,
    max_retries=5,
)
def evaluate_run(*, schema_name: str, run_id: str) -> int:
    with schema_context(schema_name):
        return len(services.alerts_for_run(run_id=run_id))


@shared_task(name="alerts.windows_sweep")
def windows_sweep() -> int:
    from engine.trust.tasks import _organization_schemas

    fired = 0
    for schema_name in _organization_schemas():
        with schema_context(schema_name):
            fired += len(services.alerts_for_windows())
    return fired


def backoff_seconds(attempt: int) -> float:
    """Before retry `attempt` (1, 2, …): base·2^(attempt-1), capped, with ±25 % jitter so that
    many failed deliveries to one receiver do not return in step."""
    base = float(settings.CADENCE_ALERT_RETRY_BASE_SECONDS)
    delay = min(base * 2 ** (attempt - 1), float(settings.CADENCE_ALERT_RETRY_MAX_SECONDS))
    return delay * random.uniform(0.75, 1.25)  # noqa: S311 - jitter, not security


@shared_task(name="alerts.deliver", bind=True, acks_late=True, max_retries=None)
def deliver(self, *, schema_name: str, event_id: str, target: str) -> str:
    attempts = int(settings.CADENCE_ALERT_MAX_ATTEMPTS)
    final = self.request.retries + 1 >= attempts
    with schema_context(schema_name):
        try:
            return services.alert_deliver(event_id=event_id, target=target, final=final)
        except services.DeliveryRetry as exc:
            raise self.retry(countdown=backoff_seconds(self.request.retries + 1), exc=exc) from None
