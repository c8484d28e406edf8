"""Workers of queued runs: `run_next` takes the next run of a queue, fairly across organizations.

acks_late and reject_on_worker_lost (settings): a worker killed mid-run leaves its message
unacknowledged, so the broker hands it to another worker; the run itself is found again by its
expired lease (`orphans_sweep`, on beat) and claimed by exactly one worker.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from celery import shared_task
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_tenants.utils import schema_context

from engine.durable import fairqueue, services
from engine.durable.callbacks import CallbackError, callback_send
from engine.durable.models import QueuedRun, RunCheckpoint
from engine.models import Run

logger = logging.getLogger(__name__)


def _fail_unstarted(run_id: str, reason: str) -> None:
    """A run that never reached the pipeline (its orchestrator is gone or suspended)."""
    Run.objects.filter(pk=run_id, status__in=[Run.Status.QUEUED, Run.Status.RUNNING]).update(
        status=Run.Status.FAILED, error=reason[:5000], finished_at=timezone.now()
    )


def run_one(*, schema_name: str, run_id: str) -> str | None:
    """Claim and run one queued run; the run's final state, or None if another worker has it."""
    from engine.durable.execution import queued_run_execute
    from engine.trust.log import organization_slug

    with schema_context(schema_name):
        queued = services.queued_run_claim(run_id=run_id)
        if queued is None:
            return None
        if queued.deadline is not None and queued.deadline <= timezone.now():
            _fail_unstarted(run_id, "deadline: the deadline passed before the run could start")
            return services.queued_run_settle(
                run_id=run_id, status="failed", reason="deadline passed"
            ).state
        # A run whose worker died mid-turn: its row was adopted (running); the turn starts
        # again under the run's snapshot and resumes after its last checkpoint (the steps the
        # checkpoints covered are kept and not run again).
        Run.objects.filter(pk=run_id, status=Run.Status.RUNNING).update(status=Run.Status.QUEUED)
    outcome = async_to_sync(queued_run_execute)(
        schema_name=schema_name, org_slug=organization_slug(schema_name), queued=queued
    )
    with schema_context(schema_name), transaction.atomic():
        reason = outcome.error_text
        if outcome.status != "succeeded":
            _fail_unstarted(run_id, reason)
        code = outcome.error.code if outcome.error is not None else ""
        if code == "cancelled":
            code = "worker_lost"  # the worker was shut down mid-run: another attempt may finish
        settled = services.queued_run_settle(
            run_id=run_id, status=outcome.status, reason=reason, code=code
        )
        if settled.state == QueuedRun.State.SUCCEEDED:
            RunCheckpoint.objects.filter(run_id=run_id).delete()
        if settled.callback_url and settled.state != QueuedRun.State.QUEUED:
            body = services.callback_body(settled).decode()
            url = settled.callback_url
            transaction.on_commit(
                lambda: callback_task.delay(schema_name=schema_name, url=url, body=body)
            )
        return settled.state


@shared_task(
    name="durable.callback",
    autoretry_for=(CallbackError,),
    retry_backoff=2,
    retry_backoff_max=300,
    max_retries=8,
)
def callback_task(*, schema_name: str, url: str, body: str) -> int:
    return callback_send(schema_name=schema_name, url=url, body=body.encode())


@shared_task(name="durable.run_next", acks_late=True, reject_on_worker_lost=True)
def run_next(*, queue: str = fairqueue.SHARED_QUEUE) -> str | None:
    popped = fairqueue.pop(services._redis(), queue=queue)
    if popped is None:
        return None
    schema_name, run_id = popped
    return run_one(schema_name=schema_name, run_id=run_id)


@shared_task(name="durable.requeue")
def requeue(*, schema_name: str, run_id: str, queue: str) -> None:
    """A retry's time has come: the run goes back in its queue (services.queued_run_settle)."""
    with schema_context(schema_name):
        if QueuedRun.objects.filter(pk=run_id, state=QueuedRun.State.QUEUED).exists():
            services._dispatch(schema_name=schema_name, run_id=run_id, queue=queue)


@shared_task(name="durable.orphans_sweep")
def orphans_sweep() -> int:
    """Put runs whose worker died (expired lease) back in their queue, and queued runs whose
    Redis entry was lost; the claim decides who runs them. A queued run still in its queue long
    after it was enqueued may have lost its Celery token instead (a worker killed between taking
    the token and popping the run): its queue gets one more token (a spare one pops nothing)."""
    from engine.trust.tasks import _organization_schemas

    client, found = services._redis(), 0
    for schema_name in _organization_schemas():
        with schema_context(schema_name):
            stale = []
            for run_id, queue, attempts, most in QueuedRun.objects.filter(
                run_id__in=services.queued_run_orphans()
            ).values_list("run_id", "queue", "attempts", "max_attempts"):
                if attempts >= most:  # its worker died during its last attempt
                    services.queued_run_exhaust(run_id=str(run_id))
                else:
                    stale.append((run_id, queue))
            since = timezone.now() - services.LEASE
            lost = (
                QueuedRun.objects.filter(state=QueuedRun.State.QUEUED, created_at__lt=since)
                .filter(Q(not_before__isnull=True) | Q(not_before__lt=since))
                .values_list("run_id", "queue")[:100]
            )
            pending: dict[str, set[str]] = {}
            starved: set[str] = set()
            for run_id, queue in [*stale, *lost]:
                if queue not in pending:
                    pending[queue] = set(
                        fairqueue.pending(client, queue=queue, schema_name=schema_name)
                    )
                if str(run_id) in pending[queue]:
                    starved.add(queue)
                    continue
                services._dispatch(schema_name=schema_name, run_id=str(run_id), queue=queue)
                found += 1
            for queue in starved:
                run_next.apply_async(kwargs={"queue": queue}, queue=queue)
    return found
