"""Reads of purged runs, scoped to the caller as runs are (engine/runs/selectors.py)."""

from __future__ import annotations

import uuid

from engine.retention.models import PurgedRun


def purged_run_get_for_user(*, principal, role: str | None, run_id, org=None) -> PurgedRun | None:
    from engine.runs.selectors import run_owner_q

    try:
        run_uuid = uuid.UUID(str(run_id))
    except ValueError:
        return None
    rows = PurgedRun.objects.filter(run_id=run_uuid)
    owned = run_owner_q(principal=principal, role=role, org=org)
    return (rows if owned is None else rows.filter(owned)).first()
