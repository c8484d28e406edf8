"""Finding the organization a request names, cached in Redis and invalidated on every change.

django-tenants does not cache its per-request lookup; with one schema per organization the lookup
is on every request's path, so it is cached here, keyed by slug or host, and dropped by the
services that change an organization or a domain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.conf import settings
from django.core.cache import cache

from tenants.models import Domain, Organization

_TTL = 300
_MISSING = "__missing__"


@dataclass(frozen=True, slots=True)
class OrgRef:
    id: int
    slug: str
    name: str
    schema_name: str
    status: str

    @property
    def is_active(self) -> bool:
        return self.status == Organization.Status.ACTIVE

    def tenant(self) -> Organization:
        """An unsaved Organization carrying what connection.set_tenant needs; never saved."""
        return Organization(
            id=self.id,
            slug=self.slug,
            name=self.name,
            schema_name=self.schema_name,
            status=self.status,
        )


def _ref(org: Organization) -> OrgRef:
    return OrgRef(
        id=org.id, slug=org.slug, name=org.name, schema_name=org.schema_name, status=org.status
    )


def _slug_key(slug: str) -> str:
    return f"org:slug:{slug}"


def _host_key(host: str) -> str:
    return f"org:host:{host}"


def org_by_slug(slug: str) -> OrgRef | None:
    key = _slug_key(slug)
    cached = cache.get(key)
    if cached == _MISSING:
        return None
    if cached is not None:
        return OrgRef(**cached)
    org = (
        Organization.objects.filter(slug=slug)
        .only("id", "slug", "name", "schema_name", "status")
        .first()
    )
    # Misses are cached briefly so that probing unknown slugs cannot hammer the database.
    cache.set(key, asdict(_ref(org)) if org else _MISSING, _TTL if org else 30)
    return _ref(org) if org else None


def slug_for_host(host: str) -> str | None:
    """`<slug>.<base domain>` names a slug; any other host may be an organization's own domain."""
    host = host.split(":", 1)[0].lower().rstrip(".")
    base = settings.CADENCE_BASE_DOMAIN
    if host.endswith("." + base):
        label = host[: -len(base) - 1]
        return label if label and "." not in label else None
    if host in (base, "127.0.0.1", "localhost", "[::1]", "testserver"):
        return None
    key = _host_key(host)
    cached = cache.get(key)
    if cached is not None:
        return None if cached == _MISSING else cached
    domain = Domain.objects.filter(domain=host).select_related("tenant").first()
    slug = domain.tenant.slug if domain else None
    cache.set(key, slug or _MISSING, _TTL)
    return slug


def org_cache_invalidate(org: Organization, *, old_slug: str | None = None) -> None:
    keys = [_slug_key(org.slug)]
    if old_slug:
        keys.append(_slug_key(old_slug))
    keys += [_host_key(d.domain) for d in Domain.objects.filter(tenant_id=org.id)]
    cache.delete_many(keys)


def domain_cache_invalidate(host: str) -> None:
    cache.delete(_host_key(host.lower()))
