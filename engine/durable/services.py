"""Queued runs: enqueue (idempotent), claim (one worker wins), execute under the run's snapshot,
dead letters (inspect, replay, discard)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
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
    max_attempts: int = 3,
) -> tuple[QueuedRun, bool]:
    """(the queued run, whether it was created now). The same key returns the same run."""
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
    claimable = Q(state=QueuedRun.State.QUEUED) | Q(
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


@transaction.atomic
def queued_run_settle(*, run_id: str, status: str, reason: str = "") -> QueuedRun:
    """After an attempt: succeeded, or dead with its reason (and the last step) once no attempt
    may follow (attempts exhausted, deadline passed, or an error a retry cannot fix)."""
    queued = QueuedRun.objects.select_for_update().get(pk=run_id)
    if status == Run.Status.SUCCEEDED:
        queued.state = QueuedRun.State.SUCCEEDED
        queued.reason = ""
    else:
        last = queued.run.events.order_by("-seq").values_list("name", flat=True).first()
        queued.state = QueuedRun.State.DEAD
        queued.reason = (reason or status) + (f" (last step: {last})" if last else "")
    queued.lease_until = None
    queued.save(update_fields=["state", "reason", "lease_until", "updated_at"])
    return queued


def dead_letter_replay(*, queued: QueuedRun, principal: str = "", actor=None) -> QueuedRun:
    """A dead run again, from the start, as a new run under the same snapshot (linked)."""
    if queued.state != QueuedRun.State.DEAD:
        raise ApplicationError("Only a dead letter can be replayed.", "not_dead_letter", status=409)
    original = queued.run
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
            replay_of=queued.run_id,
        )
        QueuedRun.objects.filter(pk=queued.pk).update(
            state=QueuedRun.State.DISCARDED, reason=queued.reason + f" (replayed as {run.id})"
        )
        audit_change(
            action="dead_letter.replayed",
            target=str(queued.run_id),
            actor=actor,
            before={"state": QueuedRun.State.DEAD, "reason": queued.reason},
            after={"state": QueuedRun.State.DISCARDED, "replayed_as": str(run.id)},
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
