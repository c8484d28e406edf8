"""Quotas (orchestrators, members, API keys, plugins, storage) held under concurrency.

Never check-then-act: the service that adds something calls `quota_enforce` inside its own
transaction, which locks the organization's row (SELECT … FOR UPDATE) before counting. Every
writer of the same organization queues on that lock until the one before it commits, so two
concurrent adds cannot both see room for one. The limit is read fresh under the lock, not from
the per-process cache, so an operator's change applies to the very next add.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import connection, transaction

from cadence_site.errors import ApplicationError
from tenants.limits.plans import limits_compute
from tenants.models import Organization

QUOTAS = {
    "max_orchestrators": "orchestrators",
    "max_members": "members",
    "max_api_keys": "active API keys",
    "max_plugins": "plugins",
    "max_storage_bytes": "bytes of storage",
}


class QuotaExceeded(ApplicationError):
    status_code = 409

    def __init__(self, *, quota: str, limit: int, used: int, adding: int):
        what = QUOTAS[quota]
        super().__init__(
            f"Quota reached: this organization's limit is {limit} {what} ({quota}) and "
            f"{used} are in use; remove some or ask an operator to raise the limit.",
            "quota_exceeded",
            {"quota": quota, "limit": limit, "used": used, "requested": adding},
        )


def quota_enforce(
    *, org_id: int, quota: str, count: Callable[[], int], adding: int = 1
) -> tuple[int, int]:
    """Lock the organization, count what is used, and refuse what would pass the limit.

    Call it inside the transaction that adds the thing (its lock lasts until that commits).
    Returns (used, limit).
    """
    if quota not in QUOTAS:
        raise ValueError(f"unknown quota {quota!r}")
    if not connection.in_atomic_block:
        raise RuntimeError("quota_enforce must run inside the transaction that adds the item")
    org = Organization.objects.select_for_update(of=("self",)).select_related("plan").get(pk=org_id)
    limit = getattr(limits_compute(org=org), quota)
    used = count()
    if used + adding > limit:
        raise QuotaExceeded(quota=quota, limit=limit, used=used, adding=adding)
    return used, limit


def current_org_id() -> int | None:
    """The organization whose schema the connection is in (None in public or the template)."""
    schema = connection.schema_name
    return (
        Organization.objects.filter(schema_name=schema).values_list("id", flat=True).first()
        if schema and schema != "public"
        else None
    )


@transaction.atomic
def quota_usage(*, org: Organization) -> dict[str, int]:
    """What an organization uses of each quota (for its limits page and the usage API)."""
    from django_tenants.utils import schema_context

    from tenants.models import ApiKey, Membership

    used = {
        "max_members": Membership.objects.filter(organization_id=org.pk).count(),
        "max_api_keys": ApiKey.objects.filter(
            organization_id=org.pk, revoked_at__isnull=True
        ).count(),
    }
    with schema_context(org.schema_name):
        from orchestrators.models import OrchestratorInstance

        used["max_orchestrators"] = OrchestratorInstance.objects.count()
    return used
