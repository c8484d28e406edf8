"""Purging runs older than each organization's plan retention (`run_retention_days`).

Per organization, oldest first, in batches of CADENCE_RETENTION_BATCH runs chosen by primary key:
each batch first deletes its payload files (file storage), then, in one short transaction,
deletes the runs by id (their steps with them, and their queued-run rows and checkpoints), clears
chat messages' links to them, and records the proven ones as purged (engine/retention/models.py
says why). Row locks only, one batch at a time: the table stays writable throughout.

Idempotent: a crash between the files and the rows leaves rows whose files are already gone;
the next pass deletes them (deleting a missing file is a no-op). Runs still queued or running are
never purged. Alert history older than the retention goes too.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from engine.models import Run, RunEvent
from engine.retention.models import PurgedRun

logger = logging.getLogger(__name__)

ACTIVE = (Run.Status.QUEUED, Run.Status.RUNNING)


@dataclass
class PurgeReport:
    runs: int = 0
    steps: int = 0
    files: int = 0
    proven: int = 0
    alert_events: int = 0

    def add(self, other: PurgeReport) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _delete_files(paths: list[str]) -> int:
    deleted = 0
    folders = set()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):  # already gone: a purge that ran before
            default_storage.delete(path)
            deleted += 1
        folders.add(os.path.dirname(path))
    # Local storage keeps empty folders (runs/<schema>/<run id>/); object stores have none.
    for folder in folders:
        # Not a local path (an object store), or not empty: left as it is.
        with contextlib.suppress(NotImplementedError, OSError):
            os.rmdir(default_storage.path(folder))
    return deleted


def _purge_batch(ids: list) -> PurgeReport:
    from engine.durable.models import RunCheckpoint
    from engine.trust.models import ExecutionProof

    report = PurgeReport()
    paths = list(
        RunEvent.objects.filter(run_id__in=ids)
        .exclude(payload="")
        .values_list("payload", flat=True)
    )
    report.files = _delete_files(paths)
    with transaction.atomic():
        proven = set(ExecutionProof.objects.filter(run_id__in=ids).values_list("run_id", flat=True))
        PurgedRun.objects.bulk_create(
            [
                PurgedRun(
                    run_id=run["id"],
                    orchestrator_slug=run["orchestrator_slug"],
                    status=run["status"],
                    started_at=run["started_at"],
                    finished_at=run["finished_at"],
                    owner_user_id=run["owner_user_id"],
                    owner_api_key_id=run["owner_api_key_id"],
                )
                for run in Run.objects.filter(id__in=proven).values(
                    "id", "orchestrator_slug", "status", "started_at", "finished_at",
                    "owner_user_id", "owner_api_key_id",
                )
            ],
            ignore_conflicts=True,
        )  # fmt: skip
        report.proven = len(proven)
        report.steps = RunEvent.objects.filter(run_id__in=ids).delete()[0]
        RunCheckpoint.objects.filter(run_id__in=[str(i) for i in ids]).delete()
        # Messages keep their text; their link to the run is cleared (SET_NULL), queued-run
        # rows go (CASCADE): Django's collector does both in bulk for these ids.
        _, by_model = Run.objects.filter(id__in=ids).only("id").delete()
        report.runs = by_model.get(Run._meta.label, 0)
    return report


def runs_purge(*, older_than: datetime, batch: int | None = None) -> PurgeReport:
    """Purge the current schema's finished runs started before `older_than`."""
    size = batch or settings.CADENCE_RETENTION_BATCH
    report = PurgeReport()
    after: tuple[datetime, object] | None = None
    while True:
        # Oldest first along the run list's (started_at, id) index, from where the last batch
        # ended: runs still active are skipped, and the index is not walked from the start again.
        candidates = Run.objects.filter(started_at__lt=older_than).exclude(status__in=ACTIVE)
        if after is not None:
            candidates = candidates.filter(
                Q(started_at__gt=after[0]) | Q(started_at=after[0], id__gt=after[1])
            )
        rows = list(candidates.order_by("started_at", "id").values_list("started_at", "id")[:size])
        if not rows:
            break
        report.add(_purge_batch([run_id for _, run_id in rows]))
        after = rows[-1]
    return report


def alert_events_purge(*, older_than: datetime, batch: int | None = None) -> int:
    from engine.alerts.models import AlertEvent

    size = batch or settings.CADENCE_RETENTION_BATCH
    total = 0
    while True:
        ids = list(
            AlertEvent.objects.filter(created_at__lt=older_than).values_list("id", flat=True)[:size]
        )
        if not ids:
            return total
        total += AlertEvent.objects.filter(id__in=ids).delete()[0]


def organization_purge(*, org_id: int, now: datetime | None = None) -> PurgeReport:
    """Purge one organization (in its schema, entered by the caller) by its plan's retention."""
    from tenants.limits.plans import org_limits

    days = org_limits(org_id=org_id).run_retention_days
    cutoff = (now or timezone.now()) - timedelta(days=days)
    report = runs_purge(older_than=cutoff)
    report.alert_events = alert_events_purge(older_than=cutoff)
    return report
