"""Writes for organizations, members and API keys. Every path (admin, API, commands) comes here."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_tenants.utils import schema_context

from cadence_site.errors import ApplicationError, ForbiddenError
from tenants import keys, provisioning
from tenants.audit.feed import audit_publish
from tenants.audit.models import AuditEvent
from tenants.limits.quotas import quota_enforce
from tenants.models import ApiKey, Domain, Membership, Organization, Plan
from tenants.resolution import domain_cache_invalidate, org_cache_invalidate  # noqa: F401 (re-exported for admin)
from tenants.roles import RANK, Role, role_at_least

logger = logging.getLogger(__name__)
User = get_user_model()

RESERVED_SLUGS = {
    "public",
    "admin",
    "api",
    "www",
    "static",
    "media",
    "ws",
    "v1",
    "orgs",
    "template",
}


@dataclass(frozen=True)
class OrganizationCreated:
    organization: Organization
    owner: AbstractUser
    owner_password: str | None
    api_key: ApiKey
    api_key_secret: str
    provisioned_by: str


def _schema_name_for(slug: str) -> str:
    return "org_" + slug.replace("-", "_")


def audit_record(
    *,
    org: Organization,
    action: str,
    actor: str = "",
    target: str = "",
    details: dict | None = None,
) -> None:
    with schema_context(org.schema_name):
        event = AuditEvent.objects.create(
            action=action, actor=actor[:200], target=target[:200], details=details or {}
        )
    # Announced once committed: a rolled-back change never reaches a live feed.
    transaction.on_commit(lambda: audit_publish(schema_name=org.schema_name, event=event))


def _actor_label(actor) -> str:
    if actor is None:
        return "system"
    if isinstance(actor, ApiKey):
        return f"key:{actor.prefix}"
    return f"user:{actor.get_username()}"


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def user_get_or_create(
    *, email: str, username: str | None = None
) -> tuple[AbstractUser, str | None]:
    """An existing user by email (or username), or a new one with a generated password returned once."""
    email = User.objects.normalize_email(email).strip()
    if not email or "@" not in email:
        raise ApplicationError(
            "A valid email address is required.", "invalid_email", {"field": "email"}
        )
    existing = User.objects.filter(email__iexact=email).order_by("id").first()
    if existing is None and username:
        existing = User.objects.filter(username=username).first()
    if existing is not None:
        return existing, None
    password = generate_password()
    user = User.objects.create_user(
        username=username or email.lower(), email=email, password=password
    )
    return user, password


def organization_create(
    *,
    name: str,
    slug: str,
    owner_email: str,
    plan: Plan | None = None,
    owner_username: str | None = None,
    actor=None,
) -> OrganizationCreated:
    """Organization, its schema (copied from the template), its owner and an owner API key."""
    slug = slug.strip().lower()
    from tenants.models import slug_validator

    try:
        slug_validator(slug)
    except Exception as exc:
        raise ApplicationError(
            f"Invalid slug {slug!r}: {exc.messages[0]}", "invalid_slug", {"field": "slug"}
        ) from None
    if slug in RESERVED_SLUGS:
        raise ApplicationError(f"The slug {slug!r} is reserved.", "invalid_slug", {"field": "slug"})
    if not name.strip():
        raise ApplicationError("A name is required.", "invalid_name", {"field": "name"})
    if Organization.objects.filter(slug=slug).exists():
        raise ApplicationError(
            f"An organization with slug {slug!r} already exists.", "slug_taken", {"field": "slug"}
        )
    if plan is None:
        plan = Plan.objects.filter(slug="default").first()

    schema_name = _schema_name_for(slug)
    with transaction.atomic():
        try:
            org = Organization.objects.create(
                name=name.strip(), slug=slug, schema_name=schema_name, plan=plan
            )
        except IntegrityError:
            raise ApplicationError(
                f"An organization with slug {slug!r} already exists.",
                "slug_taken",
                {"field": "slug"},
            ) from None
        method = provisioning.schema_provision(schema_name)
        Domain.objects.create(
            domain=f"{slug}.{settings.CADENCE_BASE_DOMAIN}", tenant=org, is_primary=True
        )
        owner, password = user_get_or_create(email=owner_email, username=owner_username)
        Membership.objects.create(user=owner, organization=org, role=Role.OWNER)
        api_key, secret = _api_key_insert(
            org=org, name="Owner key", role=Role.OWNER, created_by=owner, expires_at=None
        )
        audit_record(
            org=org,
            action="organization.created",
            actor=_actor_label(actor),
            target=slug,
            details={"provisioned_by": method},
        )
    connection.set_schema_to_public()
    org_cache_invalidate(org)
    logger.info("organization created", extra={"org_slug": slug, "provisioned_by": method})
    return OrganizationCreated(org, owner, password, api_key, secret, method)


@transaction.atomic
def organization_update(*, org: Organization, actor=None, **fields) -> Organization:
    allowed = {"name", "plan"}
    unknown = set(fields) - allowed
    if unknown:
        raise ApplicationError(
            f"Cannot update {sorted(unknown)}.", "unknown_field", {"fields": sorted(unknown)}
        )
    for field, value in fields.items():
        setattr(org, field, value)
    if "name" in fields and not str(fields["name"]).strip():
        raise ApplicationError("A name is required.", "invalid_name", {"field": "name"})
    org.save(update_fields=[*fields, "updated_at"])
    audit_record(
        org=org,
        action="organization.updated",
        actor=_actor_label(actor),
        target=org.slug,
        details={k: str(v) for k, v in fields.items()},
    )
    transaction.on_commit(lambda: org_cache_invalidate(org))
    return org


def _set_status(org: Organization, status: str, actor) -> Organization:
    with transaction.atomic():
        updated = (
            Organization.objects.filter(pk=org.pk)
            .exclude(status=status)
            .update(status=status, updated_at=timezone.now())
        )
        org.refresh_from_db()
        if updated:
            audit_record(
                org=org,
                action=f"organization.{'suspended' if status == 'suspended' else 'resumed'}",
                actor=_actor_label(actor),
                target=org.slug,
            )
    org_cache_invalidate(org)
    return org


def organization_suspend(*, org: Organization, actor=None) -> Organization:
    return _set_status(org, Organization.Status.SUSPENDED, actor)


def organization_resume(*, org: Organization, actor=None) -> Organization:
    return _set_status(org, Organization.Status.ACTIVE, actor)


def organization_delete(*, org: Organization) -> None:
    """Deletes the organization, its memberships and keys, and drops its schema."""
    slug = org.slug
    org_cache_invalidate(org)
    with transaction.atomic():
        schema = org.schema_name
        Organization.objects.filter(pk=org.pk).delete()
        provisioning.schema_drop(schema)
    connection.set_schema_to_public()
    org_cache_invalidate(Organization(slug=slug))
    logger.info("organization deleted", extra={"org_slug": slug})


@transaction.atomic
def domain_add(*, org: Organization, domain: str, is_primary: bool = False) -> Domain:
    domain = domain.strip().lower().rstrip(".")
    if Domain.objects.filter(domain=domain).exists():
        raise ApplicationError(
            f"The domain {domain!r} is already in use.", "domain_taken", {"field": "domain"}
        )
    created = Domain.objects.create(domain=domain, tenant=org, is_primary=is_primary)
    transaction.on_commit(lambda: domain_cache_invalidate(domain))
    return created


# --- members ------------------------------------------------------------------------------------


def _guard_role_change(*, actor_role: str, target_role: str | None, new_role: str | None) -> None:
    """Admins manage members below owner; only owners grant or touch the owner role."""
    if not role_at_least(actor_role, Role.ADMIN):
        raise ForbiddenError()
    for role in (target_role, new_role):
        if role == Role.OWNER and actor_role != Role.OWNER:
            raise ForbiddenError(
                "Only an owner can grant, change or remove the owner role.", "owner_required"
            )


def _ensure_owner_remains(org: Organization, membership: Membership) -> None:
    if (
        membership.role == Role.OWNER
        and not Membership.objects.filter(organization=org, role=Role.OWNER)
        .exclude(pk=membership.pk)
        .exists()
    ):
        raise ApplicationError("An organization must keep at least one owner.", "last_owner")


@transaction.atomic
def membership_add(
    *,
    org: Organization,
    email: str,
    role: str,
    actor_role: str,
    actor=None,
    username: str | None = None,
) -> tuple[Membership, str | None]:
    _guard_role_change(actor_role=actor_role, target_role=None, new_role=role)
    quota_enforce(
        org_id=org.pk,
        quota="max_members",
        count=lambda: Membership.objects.filter(organization=org).count(),
    )
    user, password = user_get_or_create(email=email, username=username)
    membership, created = Membership.objects.get_or_create(
        user=user, organization=org, defaults={"role": role}
    )
    if not created:
        raise ApplicationError(
            "That user is already a member.", "already_member", {"field": "email"}
        )
    audit_record(
        org=org,
        action="member.added",
        actor=_actor_label(actor),
        target=user.get_username(),
        details={"role": role},
    )
    return membership, password


@transaction.atomic
def membership_update(
    *, membership: Membership, role: str, actor_role: str, actor=None
) -> Membership:
    _guard_role_change(actor_role=actor_role, target_role=membership.role, new_role=role)
    if role != Role.OWNER:
        _ensure_owner_remains(membership.organization, membership)
    old = membership.role
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    audit_record(
        org=membership.organization,
        action="member.role_changed",
        actor=_actor_label(actor),
        target=membership.user.get_username(),
        details={"from": old, "to": role},
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor_role: str, actor=None) -> None:
    _guard_role_change(actor_role=actor_role, target_role=membership.role, new_role=None)
    _ensure_owner_remains(membership.organization, membership)
    org = membership.organization
    username = membership.user.get_username()
    user_id = membership.user_id
    membership.delete()
    # Their team rows go with them (selectors already ignore rows of users who left).
    from tenants.teams.services import team_memberships_end_for_user

    with schema_context(org.schema_name):
        team_memberships_end_for_user(user_id=user_id)
    audit_record(org=org, action="member.removed", actor=_actor_label(actor), target=username)


# --- API keys -----------------------------------------------------------------------------------


def _api_key_insert(
    *,
    org: Organization,
    name: str,
    role: str,
    created_by,
    expires_at: datetime | None,
    created_by_key: ApiKey | None = None,
    team_id=None,
) -> tuple[ApiKey, str]:
    for _ in range(3):
        secret, prefix, digest = keys.key_generate()
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    organization=org,
                    name=name,
                    prefix=prefix,
                    secret_hash=digest,
                    role=role,
                    created_by=created_by,
                    created_by_key=created_by_key,
                    team_id=team_id,
                    expires_at=expires_at,
                )
            return key, secret
        except IntegrityError:
            # A prefix collision (about 1 in 2^54 per pair): draw again.
            continue
    raise ApplicationError(
        "Could not allocate an API key; try again.", "key_allocation_failed", status=503
    )


def api_key_create(
    *,
    org: Organization,
    name: str,
    role: str,
    creator_role: str,
    created_by=None,
    expires_at: datetime | None = None,
    team_id=None,
) -> tuple[ApiKey, str]:
    """A key whose role is no higher than its creator's. Returns the key and its secret (shown once).

    `team_id` limits the key to one team's resources (tenants/teams/scoping.py); a key minted by
    a team-limited key is limited to that team too."""
    if RANK[Role(role)] > RANK[Role(creator_role)]:
        raise ForbiddenError(
            f"A key cannot have a higher role than its creator ({creator_role}).", "role_too_high"
        )
    if expires_at is not None and expires_at <= timezone.now():
        raise ApplicationError(
            "expires_at must be in the future.", "invalid_expiry", {"field": "expires_at"}
        )
    with transaction.atomic():
        quota_enforce(
            org_id=org.pk,
            quota="max_api_keys",
            count=lambda: ApiKey.objects.filter(organization=org, revoked_at__isnull=True).count(),
        )
        # A key minted with a key names that key as its creator: its rights follow the minting
        # key's (tenants/rights.py), and it stops when that key does.
        creator = created_by if isinstance(created_by, User) else None
        creator_key = created_by if isinstance(created_by, ApiKey) else None
        if creator_key is not None and creator_key.organization_id != org.pk:
            raise ForbiddenError()
        if creator_key is not None and creator_key.team_id is not None:
            if team_id not in (None, creator_key.team_id):
                raise ForbiddenError(
                    "A team-limited key can only create keys limited to its own team.",
                    "team_limited",
                )
            team_id = creator_key.team_id
        key, secret = _api_key_insert(
            org=org,
            name=name,
            role=role,
            created_by=creator,
            created_by_key=creator_key,
            expires_at=expires_at,
            team_id=team_id,
        )
        details = {"name": name, "role": role}
        if team_id is not None:
            details["team"] = str(team_id)
        audit_record(
            org=org,
            action="api_key.created",
            actor=_actor_label(created_by),
            target=key.prefix,
            details=details,
        )
    logger.info("api key created", extra={"key_prefix": key.prefix, "org_slug": org.slug})
    return key, secret


def _guard_owner_key(*, key: ApiKey, actor_role: str) -> None:
    """Owner-role keys are the owners' business: an admin can neither revoke nor reassign one."""
    if not role_at_least(actor_role, Role.ADMIN):
        raise ForbiddenError()
    if key.role == Role.OWNER and actor_role != Role.OWNER:
        raise ForbiddenError("Only an owner can change an owner-role key.", "owner_required")


@transaction.atomic
def api_key_revoke(*, key: ApiKey, actor_role: str, actor=None) -> ApiKey:
    _guard_owner_key(key=key, actor_role=actor_role)
    updated = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    key.refresh_from_db()
    from tenants.selectors import api_key_cache_key

    prefix = key.prefix
    # Authentication caches keys by prefix: the revocation takes effect as soon as it commits.
    transaction.on_commit(lambda: cache.delete(api_key_cache_key(prefix)))
    if updated:
        audit_record(
            org=key.organization,
            action="api_key.revoked",
            actor=_actor_label(actor),
            target=key.prefix,
        )
    return key


_touched: dict[object, float] = {}  # key id → until when this process knows the key was touched


def api_key_touch_due(*, key_id) -> bool:
    """Whether `api_key_touch` would do more than look at this process's memory."""
    return _touched.get(key_id, 0.0) <= time.monotonic()


def api_key_touch(*, key: ApiKey) -> None:
    """Record use at most once per interval per key, so authentication does not write per request
    (the shared cache says whether any process did; this process remembers its own answer for
    the interval, so a busy key costs no round trip either)."""
    interval = settings.CADENCE_API_KEY_TOUCH_INTERVAL
    now = time.monotonic()
    if _touched.get(key.pk, 0.0) > now:
        return
    if len(_touched) > 10_000:
        _touched.clear()
    _touched[key.pk] = now + interval
    if cache.add(f"apikey:touched:{key.pk}", 1, interval):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())


@transaction.atomic
def api_keys_reassign(
    *, org: Organization, keys: list[ApiKey], to: Membership, actor_role: str, actor=None
) -> list[ApiKey]:
    """Make a current member the creator of `keys`, so they keep working after their creator
    leaves. Owners only; the keys' rights become the lower of their role and the new creator's."""
    if actor_role != Role.OWNER:
        raise ForbiddenError("Only an owner can reassign API keys.", "owner_required")
    if to.organization_id != org.pk:
        raise ApplicationError("No such member.", "unknown_member", {"field": "member_id"})
    ids = [k.pk for k in keys if k.organization_id == org.pk]
    ApiKey.objects.filter(pk__in=ids).update(created_by=to.user, created_by_key=None)
    reassigned = list(ApiKey.objects.filter(pk__in=ids).select_related("created_by"))
    from tenants.selectors import api_key_cache_key

    prefixes = [k.prefix for k in reassigned]
    # Authentication caches key rows (creator included) by prefix.
    transaction.on_commit(lambda: cache.delete_many([api_key_cache_key(p) for p in prefixes]))
    for key in reassigned:
        audit_record(
            org=org,
            action="api_key.reassigned",
            actor=_actor_label(actor),
            target=key.prefix,
            details={"to": to.user.get_username()},
        )
    return reassigned
