"""Writes for limits: an organization's override (operators) and an API key's limits (its admins)."""

from __future__ import annotations

from django.db import transaction

from cadence_site.errors import ApplicationError
from tenants.limits import plans
from tenants.limits.models import KEY_FIELDS, ORG_FIELDS, ApiKeyLimits, OrganizationLimits
from tenants.models import ApiKey, Organization


def _checked(values: dict, allowed: tuple[str, ...]) -> dict:
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ApplicationError(f"Unknown limits {unknown}.", "unknown_field", {"fields": unknown})
    for name, value in values.items():
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise ApplicationError(
                f"{name} must be a whole number of zero or more, or null.",
                "invalid_limit",
                {"field": name},
            )
    return values


@transaction.atomic
def organization_limits_set(*, org: Organization, actor=None, **values) -> OrganizationLimits:
    """Set (or clear, with None) an organization's exceptions to its plan. Operators only."""
    from tenants.services import _actor_label, audit_record

    _checked(values, ORG_FIELDS)
    override, _ = OrganizationLimits.objects.select_for_update().get_or_create(organization=org)
    for name, value in values.items():
        setattr(override, name, value)
    override.full_clean()
    override.save()
    audit_record(
        org=org,
        action="limits.overridden",
        actor=_actor_label(actor),
        target=org.slug,
        details={k: v for k, v in values.items()},
    )
    transaction.on_commit(lambda: plans.limits_forget(org_id=org.pk))
    return override


@transaction.atomic
def api_key_limits_set(*, key: ApiKey, actor=None, **values) -> ApiKeyLimits:
    """A key's own limits, each within its organization's (a key cannot be given more)."""
    from tenants.services import _actor_label, audit_record

    _checked(values, KEY_FIELDS)
    org = Organization.objects.select_related("plan").get(pk=key.organization_id)
    effective = plans.limits_compute(org=org)
    for name, value in values.items():
        ceiling = getattr(effective, name)
        if value is not None and ceiling is not None and value > ceiling:
            raise ApplicationError(
                f"{name} of {value} exceeds the organization's limit of {ceiling}.",
                "limit_above_organization",
                {"field": name, "organization_limit": ceiling},
            )
        if name in ("requests_per_minute", "request_burst", "concurrent_streams") and value == 0:
            raise ApplicationError(
                f"{name} must be at least 1, or null for the organization's.",
                "invalid_limit",
                {"field": name},
            )
    limits, _ = ApiKeyLimits.objects.select_for_update().get_or_create(api_key=key)
    for name, value in values.items():
        setattr(limits, name, value)
    limits.save()
    audit_record(
        org=org,
        action="api_key.limits_changed",
        actor=_actor_label(actor),
        target=key.prefix,
        details={k: v for k, v in values.items()},
    )
    transaction.on_commit(lambda: plans.limits_forget(key_id=key.pk))
    return limits
