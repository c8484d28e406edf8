"""The limits that apply to an organization and to an API key: plan, then override, then key.

Read on every request, so they are kept in-process for a few seconds (a change applies within
CADENCE_LIMITS_CACHE_SECONDS (5 s) everywhere, at once in the process that made it): the rate-limit decision stays one
Redis round trip, with no cache read in front of it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, fields, replace

from django.conf import settings

from tenants.limits.models import KEY_FIELDS, ORG_FIELDS, ApiKeyLimits, OrganizationLimits
from tenants.models import Organization, Plan


def _ttl() -> float:
    return getattr(settings, "CADENCE_LIMITS_CACHE_SECONDS", 5.0)


# An organization without a plan (only possible when an operator deletes the default one).
FALLBACK = {
    "requests_per_minute": 600,
    "request_burst": None,
    "tokens_per_minute": None,
    "tokens_per_day": None,
    "tokens_per_month": None,
    "concurrent_streams": None,
    "max_orchestrators": 20,
    "max_members": 50,
    "max_api_keys": 20,
    "max_plugins": 50,
    "max_storage_bytes": 1024**3,
    "run_retention_days": 30,
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Effective limits; None means "no limit" (token budgets, concurrent streams).

    `tenant` is the organization's public id: what its rate-limit buckets are keyed by."""

    tenant: str
    requests_per_minute: int
    request_burst: int | None
    tokens_per_minute: int | None
    tokens_per_day: int | None
    tokens_per_month: int | None
    concurrent_streams: int | None
    max_orchestrators: int
    max_members: int
    max_api_keys: int
    max_plugins: int
    max_storage_bytes: int
    run_retention_days: int

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "tenant"}


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """A key's own limits (None: only the organization's apply)."""

    requests_per_minute: int | None = None
    request_burst: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    concurrent_streams: int | None = None

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


NO_KEY_LIMITS = KeyLimits()

_lock = threading.Lock()
_org_cache: dict[int, tuple[float, Limits]] = {}
_key_cache: dict[str, tuple[float, KeyLimits]] = {}


def plan_limits(plan: Plan | None, *, tenant: str = "") -> Limits:
    if plan is None:
        return Limits(tenant=tenant, **FALLBACK)
    return Limits(tenant=tenant, **{name: getattr(plan, name) for name in ORG_FIELDS})


def limits_compute(*, org: Organization) -> Limits:
    """Uncached: the plan's limits with the organization's override applied."""
    limits = plan_limits(org.plan, tenant=str(org.public_id))
    override = OrganizationLimits.objects.filter(organization_id=org.pk).first()
    if override is None:
        return limits
    changes = {
        name: getattr(override, name) for name in ORG_FIELDS if getattr(override, name) is not None
    }
    return replace(limits, **changes)


def org_limits_cached(*, org_id: int) -> Limits | None:
    """The cached limits, or None when they must be read (async callers check this first)."""
    cached = _org_cache.get(org_id)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    return None


def org_limits(*, org_id: int) -> Limits:
    now = time.monotonic()
    cached = _org_cache.get(org_id)
    if cached is not None and cached[0] > now:
        return cached[1]
    org = Organization.objects.select_related("plan").get(pk=org_id)
    limits = limits_compute(org=org)
    with _lock:
        _org_cache[org_id] = (now + _ttl(), limits)
    return limits


def key_limits_cached(*, key_id) -> KeyLimits | None:
    cached = _key_cache.get(str(key_id))
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    return None


def key_limits(*, key_id) -> KeyLimits:
    now = time.monotonic()
    cached = _key_cache.get(str(key_id))
    if cached is not None and cached[0] > now:
        return cached[1]
    row = ApiKeyLimits.objects.filter(api_key_id=key_id).values(*KEY_FIELDS).first()
    limits = KeyLimits(**row) if row else NO_KEY_LIMITS
    with _lock:
        _key_cache[str(key_id)] = (now + _ttl(), limits)
    return limits


def limits_forget(*, org_id: int | None = None, key_id=None) -> None:
    """Drop cached limits (services that change them; tests). No arguments: forget everything."""
    with _lock:
        if org_id is None and key_id is None:
            _org_cache.clear()
            _key_cache.clear()
        if org_id is not None:
            _org_cache.pop(org_id, None)
        if key_id is not None:
            _key_cache.pop(str(key_id), None)
