"""Queued runs: enqueue (idempotent), claim (one worker wins), execute under the run's snapshot,
dead letters (inspect, replay, discard)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import re
import socket
import uuid
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from cadence_site.errors import ApplicationError, NotFoundError
from engine.durable import fairqueue
from engine.durable.models import QueuedRun
from engine.models import Run
from tenants.audit.changes import audit_change

logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
MAX_INPUT_BYTES = 64 * 1024
# How long a worker's claim on a running run lasts without a heartbeat (execution.py renews it).
LEASE = dt.timedelta(seconds=getattr(settings, "CADENCE_RUN_LEASE_SECONDS", 30))
# The claimant's name: host, the worker's own name when it has one (CADENCE_WORKER_ID), process.
# The per-run retry policy's defaults (set at enqueue): 3 attempts, 2 s doubling up to 300 s.
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF_SECONDS = 2.0
DEFAULT_BACKOFF_MAX_SECONDS = 300.0
# Failures a later attempt may not meet: the model's rate limits, 5xx and timeouts, a worker that
# died or shut down mid-run. Everything else (a bad request, a refused key, the deadline) is final.
RETRYABLE_CODES = frozenset(
    {
        "llm_rate_limited",
        "llm_unavailable",
        "llm_timeout",
        "llm_error",
        "llm_circuit_open",
        "worker_lost",
    }
)
WORKER = ":".join(
    part
    for part in (
        socket.gethostname(),
        os.environ.get("CADENCE_WORKER_ID", ""),
        uuid.uuid4().hex[:8],
    )
    if part
)


def _redis():
    from cadence_site.aredis import sync_redis

    return sync_redis(settings.REDIS_URL, 5.0)


def _dispatch(*, schema_name: str, run_id: str, queue: str, countdown: float = 0) -> None:
    from engine.durable.tasks import run_next

    fairqueue.push(_redis(), queue=queue, schema_name=schema_name, run_id=run_id)
    run_next.apply_async(kwargs={"queue": queue}, queue=queue, countdown=countdown or None)


def _org_slug() -> str:
    from engine.trust.log import organization_slug

    return organization_slug(connection.schema_name)


def queued_run_enqueue(
    *,
    instance: Any,
    message: str,
    idempotency_key: str,
    deadline: dt.datetime | None = None,
    callback_url: str = "",
    principal: str = "",
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
    backoff_max_seconds: float = DEFAULT_BACKOFF_MAX_SECONDS,
) -> tuple[QueuedRun, bool]:
    """(the queued run, whether it was created now). The same key returns the same run.

    The run's retry policy: at most `max_attempts` attempts; a retryable failure waits
    `retry_delay` (exponential from `backoff_seconds`, capped at `backoff_max_seconds`, with
    jitter) before the next; `deadline` bounds them all (see queued_run_settle)."""
    from engine.trust.snapshots import snapshot_for_orchestrator
    from orchestrators.models import OrchestratorInstance

    existing = QueuedRun.objects.select_related("run").filter(idempotency_key=idempotency_key)
    if (found := existing.first()) is not None:
        return found, False
    if not IDEMPOTENCY_KEY.match(idempotency_key):
        raise ApplicationError(
            "idempotency_key: 1-128 letters, digits, '_', '.', ':' or '-'.",
            "invalid_idempotency_key",
            {"field": "idempotency_key"},
        )
    if instance.status == OrchestratorInstance.Status.SUSPENDED:
        raise ApplicationError(
            f"The orchestrator {instance.slug!r} is suspended.",
            "orchestrator_suspended",
            status=409,
        )
    if len(message.encode()) > MAX_INPUT_BYTES:
        raise ApplicationError(
            f"input is over {MAX_INPUT_BYTES} bytes.", "input_too_large", {"field": "input"}
        )
    if deadline is not None and deadline <= timezone.now():
        raise ApplicationError("deadline is in the past.", "invalid", {"field": "deadline"})
    if callback_url:
        from cadence_site.outbound import check_url

        try:
            check_url(callback_url)
        except ApplicationError as exc:
            raise ApplicationError(exc.message, exc.code, {"field": "callback_url"}) from None
    queue = fairqueue.queue_for(_org_slug())
    try:
        with transaction.atomic():
            run = Run.objects.create(
                orchestrator=instance,
                orchestrator_slug=instance.slug,
                team_id=instance.team_id,
                config_hash=instance.config_hash,
                trigger=Run.Trigger.QUEUE,
                principal=principal[:200],
                status=Run.Status.QUEUED,
                input={"message": message},
                # Pinned now: whatever the orchestrator becomes, this run runs this definition.
                snapshot=snapshot_for_orchestrator(instance=instance),
            )
            queued = QueuedRun.objects.create(
                run=run,
                idempotency_key=idempotency_key,
                orchestrator_id=instance.id,
                message=message,
                queue=queue,
                deadline=deadline,
                callback_url=callback_url,
                max_attempts=max_attempts,
                backoff_seconds=backoff_seconds,
                backoff_max_seconds=max(backoff_max_seconds, backoff_seconds),
            )
    except IntegrityError:
        # Two requests with one key at once: the other one's insert won.
        return existing.get(), False
    schema, run_id = connection.schema_name, str(run.id)
    transaction.on_commit(lambda: _dispatch(schema_name=schema, run_id=run_id, queue=queue))
    return queued, True


def queued_run_claim(*, run_id: str) -> QueuedRun | None:
    """Take a run for this worker: a queued one, or a running one whose worker's lease expired.
    A conditional update: of any number of workers, one gets 1 row back."""
    now = timezone.now()
    due = Q(not_before__isnull=True) | Q(not_before__lte=now)  # a retry waits for its time
    claimable = Q(due, state=QueuedRun.State.QUEUED) | Q(
        state=QueuedRun.State.RUNNING, lease_until__lt=now
    )
    won = QueuedRun.objects.filter(claimable, run_id=run_id, attempts__lt=F("max_attempts")).update(
        state=QueuedRun.State.RUNNING,
        claimed_by=WORKER,
        claimed_at=now,
        lease_until=now + LEASE,
        attempts=F("attempts") + 1,
    )
    return QueuedRun.objects.select_related("run").get(pk=run_id) if won else None


def queued_run_orphans(*, limit: int = 10) -> list[str]:
    """Runs whose worker died (lease expired while running): for the next worker to resume."""
    return [
        str(pk)
        for pk in QueuedRun.objects.filter(
            state=QueuedRun.State.RUNNING, lease_until__lt=timezone.now()
        ).values_list("run_id", flat=True)[:limit]
    ]


def lease_renew(*, run_id: str) -> bool:
    return bool(
        QueuedRun.objects.filter(
            run_id=run_id, state=QueuedRun.State.RUNNING, claimed_by=WORKER
        ).update(lease_until=timezone.now() + LEASE)
    )


def retry_delay(*, attempts: int, backoff: float, cap: float) -> float:
    """Seconds before the retry that follows attempt `attempts`: backoff * 2**(attempts-1), at
    most `cap`, its second half random ("equal jitter": retries of runs that failed together
    spread out, and none comes sooner than half the step)."""
    step = min(cap, backoff * 2 ** max(0, attempts - 1))
    return step / 2 + random.uniform(0, step / 2)  # noqa: S311 - jitter, not a secret


@transaction.atomic
def queued_run_settle(*, run_id: str, status: str, reason: str = "", code: str = "") -> QueuedRun:
    """After an attempt: succeeded; queued again for a retry when the failure's `code` is
    retryable (RETRYABLE_CODES), attempts remain and the retry can start before the deadline;
    else dead, with its reason and last step, and proven (a queued run is proven once final)."""
    from engine.trust.turns import prove_run

    queued = QueuedRun.objects.select_for_update().get(pk=run_id)
    fields = ["state", "reason", "lease_until", "not_before", "updated_at"]
    queued.lease_until = None
    if status == Run.Status.SUCCEEDED:
        queued.state = QueuedRun.State.SUCCEEDED
        queued.reason = ""
        queued.save(update_fields=fields)
        return queued
    now = timezone.now()
    retry_at = None
    if code in RETRYABLE_CODES and queued.attempts < queued.max_attempts:
        retry_at = now + dt.timedelta(
            seconds=retry_delay(
                attempts=queued.attempts,
                backoff=queued.backoff_seconds,
                cap=queued.backoff_max_seconds,
            )
        )
        if queued.deadline is not None and retry_at >= queued.deadline:
            retry_at = None
            reason = f"{reason} (no retry could start before the deadline)"
    last = queued.run.events.order_by("-seq").values_list("name", flat=True).first()
    where = f" (last step: {last})" if last else ""
    if retry_at is not None:
        queued.state = QueuedRun.State.QUEUED
        queued.not_before = retry_at
        queued.reason = f"attempt {queued.attempts} failed, retrying: {reason or status}{where}"
        queued.save(update_fields=fields)
        # The run's row is adopted again by the next attempt, which resumes after the last
        # checkpoint (the failed step has none: it runs again).
        Run.objects.filter(pk=run_id).update(status=Run.Status.QUEUED, finished_at=None)
        schema, queue = connection.schema_name, queued.queue
        transaction.on_commit(
            lambda: _dispatch_at(schema_name=schema, run_id=run_id, queue=queue, when=retry_at)
        )
        return queued
    queued.state = QueuedRun.State.DEAD
    queued.reason = (reason or status) + where
    queued.save(update_fields=fields)
    prove_run(run_id=run_id)
    return queued


def _dispatch_at(*, schema_name: str, run_id: str, queue: str, when: dt.datetime) -> None:
    """The run back in its queue at `when` (a Celery ETA task on the run's queue; if that
    message is lost, orphans_sweep finds the run a lease after `when`)."""
    from engine.durable.tasks import requeue

    requeue.apply_async(
        kwargs={"schema_name": schema_name, "run_id": run_id, "queue": queue},
        queue=queue,
        eta=when,
    )


def queued_run_exhaust(*, run_id: str) -> QueuedRun | None:
    """A run whose worker died during its last attempt (lease expired, no attempt left): dead."""
    with transaction.atomic():
        queued = (
            QueuedRun.objects.select_for_update()
            .filter(
                pk=run_id,
                state=QueuedRun.State.RUNNING,
                lease_until__lt=timezone.now(),
                attempts__gte=F("max_attempts"),
            )
            .first()
        )
        if queued is None:
            return None
        Run.objects.filter(pk=run_id, status=Run.Status.RUNNING).update(
            status=Run.Status.FAILED,
            error="worker_lost: the worker died during the last attempt",
            finished_at=timezone.now(),
        )
        return queued_run_settle(
            run_id=run_id,
            status=Run.Status.FAILED,
            reason="worker_lost: the worker died during the last attempt",
        )


def dead_letter_replay(
    *, queued: QueuedRun, principal: str = "", actor=None, from_failed_step: bool = False
) -> QueuedRun:
    """A dead run again as a new run under the same snapshot (linked): from the start, or from
    the failed step (it resumes from the dead run's last checkpoint, the one before the step
    that failed, and keeps copies of the step records that checkpoint covered)."""
    from engine.durable.models import RunCheckpoint
    from engine.models import RunEvent

    if queued.state != QueuedRun.State.DEAD:
        raise ApplicationError("Only a dead letter can be replayed.", "not_dead_letter", status=409)
    original = queued.run
    checkpoint = (
        RunCheckpoint.objects.filter(run_id=str(queued.run_id)).first()
        if from_failed_step
        else None
    )
    with transaction.atomic():
        run = Run.objects.create(
            orchestrator_id=original.orchestrator_id,
            orchestrator_slug=original.orchestrator_slug,
            config_hash=original.config_hash,
            trigger=Run.Trigger.QUEUE,
            principal=principal[:200],
            status=Run.Status.QUEUED,
            input=original.input,
            snapshot_id=original.snapshot_id,
        )
        replay = QueuedRun.objects.create(
            run=run,
            idempotency_key=f"replay:{run.id}",
            orchestrator_id=queued.orchestrator_id,
            message=queued.message,
            queue=queued.queue,
            callback_url=queued.callback_url,
            max_attempts=queued.max_attempts,
            backoff_seconds=queued.backoff_seconds,
            backoff_max_seconds=queued.backoff_max_seconds,
            replay_of=queued.run_id,
        )
        if checkpoint is not None:
            kept = RunEvent.objects.filter(run_id=original.id, seq__lte=checkpoint.steps)
            RunEvent.objects.bulk_create(
                [
                    RunEvent(
                        **{
                            f.attname: getattr(e, f.attname)
                            for f in RunEvent._meta.concrete_fields
                            if f.attname not in ("id", "run_id")
                        },
                        run_id=run.id,
                    )
                    for e in kept.order_by("seq")
                ]
            )
            checkpoint.pk = str(run.id)
            checkpoint.run_id = str(run.id)
            checkpoint.save(force_insert=True)
        QueuedRun.objects.filter(pk=queued.pk).update(
            state=QueuedRun.State.DISCARDED, reason=queued.reason + f" (replayed as {run.id})"
        )
        audit_change(
            action="dead_letter.replayed",
            target=str(queued.run_id),
            actor=actor,
            before={"state": QueuedRun.State.DEAD, "reason": queued.reason},
            after={
                "state": QueuedRun.State.DISCARDED,
                "replayed_as": str(run.id),
                "from": "failed_step" if checkpoint is not None else "start",
            },
        )
    schema, run_id, queue = connection.schema_name, str(run.id), replay.queue
    transaction.on_commit(lambda: _dispatch(schema_name=schema, run_id=run_id, queue=queue))
    return replay


def dead_letter_discard(*, queued: QueuedRun, actor=None) -> QueuedRun:
    if queued.state != QueuedRun.State.DEAD:
        raise ApplicationError(
            "Only a dead letter can be discarded.", "not_dead_letter", status=409
        )
    with transaction.atomic():
        discarded = QueuedRun.objects.filter(pk=queued.pk, state=QueuedRun.State.DEAD).update(
            state=QueuedRun.State.DISCARDED
        )
        if discarded:
            audit_change(
                action="dead_letter.discarded",
                target=str(queued.run_id),
                actor=actor,
                before={"state": QueuedRun.State.DEAD, "reason": queued.reason},
                after={"state": QueuedRun.State.DISCARDED},
            )
    queued.refresh_from_db()
    return queued


def dead_letter_get(*, run_id: Any) -> QueuedRun:
    found = QueuedRun.objects.select_related("run").filter(pk=run_id).first()
    if found is None:
        raise NotFoundError("No such queued run.", "queued_run_not_found")
    return found


def queued_output(queued: QueuedRun) -> dict[str, Any]:
    return {
        "id": str(queued.run_id),
        "status": queued.run.status,
        "state": queued.state,
        "orchestrator": str(queued.orchestrator_id),
        "idempotency_key": queued.idempotency_key,
        "attempts": queued.attempts,
        "reason": queued.reason,
        "replay_of": str(queued.replay_of) if queued.replay_of else None,
        "created_at": queued.created_at.isoformat(),
        "deadline": queued.deadline.isoformat() if queued.deadline else None,
    }


def callback_body(queued: QueuedRun) -> bytes:
    run = queued.run
    return json.dumps(
        {"run": str(run.id), "status": run.status, "output": run.output, "state": queued.state},
        separators=(",", ":"),
    ).encode()
