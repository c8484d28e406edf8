"""Writes of an organization's single sign-on provider, each audited in the organization's trail.

One path for REST and the organization's admin: the input is checked here (issuer URL, domains,
the claim mapping and the teams it names), the client secret is encrypted with the LLM keys'
Fernet (orchestrators/crypto.py) and only its hint is ever shown or audited.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction
from django_tenants.utils import schema_context

from cadence_site.errors import ApplicationError, ForbiddenError
from cadence_site.outbound import UNRESOLVABLE, EgressDenied, check_url
from orchestrators import crypto
from tenants.models import Organization
from tenants.roles import Role, role_at_least
from tenants.services import _actor_label, audit_record
from tenants.sso.models import MAPPABLE_ROLES, SsoProvider
from tenants.teams.models import Team

MAX_DOMAINS = 50
MAX_MAPPING = 200
MAX_SCOPES = 300
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_CLAIM = re.compile(r"^[A-Za-z0-9_:./-]{1,100}$")
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def _invalid(message: str, field: str) -> ApplicationError:
    return ApplicationError(message, "invalid", {"field": field})


def _require_admin(actor_role: str) -> None:
    if not role_at_least(actor_role, Role.ADMIN):
        raise ForbiddenError(
            f"Configuring single sign-on needs the admin role or higher; yours is {actor_role}.",
            "role_required",
        )


def issuer_clean(issuer: str) -> tuple[str, list[str]]:
    """The issuer as the provider must name itself, and warnings for an unresolvable host."""
    issuer = issuer.strip()
    if not issuer or len(issuer) > 500:
        raise _invalid("The issuer is a URL of at most 500 characters.", "issuer")
    try:
        parts = urlsplit(issuer)
        host = (parts.hostname or "").lower()
    except ValueError:
        raise _invalid("The issuer is not a valid URL.", "issuer") from None
    if parts.query or parts.fragment or parts.username or parts.password:
        raise _invalid(
            "The issuer URL has no query, fragment or credentials (OpenID Connect Discovery).",
            "issuer",
        )
    # OpenID Connect requires https; plain http only for a provider on this machine (development).
    if parts.scheme != "https" and not (parts.scheme == "http" and host in _LOOPBACK_HOSTS):
        raise _invalid(
            "The issuer must be an https URL (http only for localhost during development).",
            "issuer",
        )
    warnings: list[str] = []
    try:
        check_url(issuer)
    except EgressDenied as exc:
        if exc.extra.get("reason") != UNRESOLVABLE:
            raise ApplicationError(
                exc.message, exc.code, {"field": "issuer", **exc.extra}
            ) from None
        warnings.append(
            f"The issuer's host {host} does not resolve now; it is checked again at each sign-in."
        )
    return issuer, warnings


def _domains_clean(domains: Any) -> list[str]:
    if not isinstance(domains, list) or not domains:
        raise _invalid(
            "List at least one email domain whose addresses may sign in.", "allowed_domains"
        )
    if len(domains) > MAX_DOMAINS:
        raise _invalid(f"At most {MAX_DOMAINS} domains.", "allowed_domains")
    cleaned = []
    for domain in domains:
        value = str(domain).strip().lower().lstrip("@").rstrip(".")
        if not _DOMAIN.match(value):
            raise _invalid(f"{str(domain)[:100]!r} is not a domain name.", "allowed_domains")
        cleaned.append(value)
    return sorted(set(cleaned))


def _team_resolve(ref: str) -> Team | None:
    try:
        team = Team.objects.filter(id=uuid.UUID(str(ref))).first()
    except ValueError:
        team = None
    return (
        team
        or Team.objects.filter(slug=str(ref)).first()
        or Team.objects.filter(name__iexact=str(ref)).first()
    )


def _mapping_clean(*, org: Organization, mapping: Any) -> dict[str, dict]:
    if not isinstance(mapping, dict):
        raise _invalid("The mapping is an object: claim value → {role, team}.", "mapping")
    if len(mapping) > MAX_MAPPING:
        raise _invalid(f"At most {MAX_MAPPING} mapping entries.", "mapping")
    cleaned: dict[str, dict] = {}
    with schema_context(org.schema_name):
        for value, entry in mapping.items():
            where = f"mapping.{str(value)[:100]}"
            if not str(value) or len(str(value)) > 200:
                raise _invalid("A claim value has 1 to 200 characters.", "mapping")
            if not isinstance(entry, dict) or set(entry) - {"role", "team"}:
                raise _invalid(
                    'Each entry is {"role": "admin|member|viewer", "team": <team id or name>}.',
                    where,
                )
            role = entry.get("role") or Role.MEMBER
            if role not in MAPPABLE_ROLES:
                raise _invalid(
                    "The role is admin, member or viewer (owners are made by people).", where
                )
            team_id = None
            if entry.get("team") not in (None, ""):
                team = _team_resolve(entry["team"])
                if team is None:
                    raise ApplicationError(
                        f"No team {str(entry['team'])[:100]!r} in this organization.",
                        "unknown_team",
                        {"field": where},
                    )
                team_id = str(team.id)
            cleaned[str(value)] = {"role": role, "team": team_id}
    return cleaned


def provider_snapshot(provider: SsoProvider) -> dict:
    """What the audit trail keeps: everything but the secret, which appears as its hint."""
    return {
        "issuer": provider.issuer,
        "client_id": provider.client_id,
        "client_secret": provider.client_secret_hint,
        "scopes": provider.scopes,
        "allowed_domains": provider.allowed_domains,
        "claim": provider.claim,
        "mapping": provider.mapping,
        "default_role": provider.default_role,
        "sso_required": provider.sso_required,
    }


def sso_provider_validate(
    *,
    org: Organization,
    issuer: str,
    client_id: str,
    allowed_domains: list[str],
    client_secret: str | None = None,
    scopes: str = "openid email profile",
    claim: str = "",
    mapping: dict | None = None,
    default_role: str = Role.MEMBER,
    sso_required: bool = False,
) -> dict[str, Any]:
    """The fields as they will be stored, plus `warnings`; ApplicationError naming the field."""
    issuer, warnings = issuer_clean(issuer)
    client_id = client_id.strip()
    if not client_id or len(client_id) > 255:
        raise _invalid("The client id has 1 to 255 characters.", "client_id")
    if client_secret is not None and len(client_secret) > 1000:
        raise _invalid("The client secret has at most 1000 characters.", "client_secret")
    words = scopes.split()
    if "openid" not in words or len(scopes) > MAX_SCOPES or not all(map(_SCOPE.match, words)):
        raise _invalid("Scopes are space-separated and include openid.", "scopes")
    claim = claim.strip()
    if claim and not _CLAIM.match(claim):
        raise _invalid("The claim is a name of letters, digits and _:./-.", "claim")
    mapping = _mapping_clean(org=org, mapping=mapping or {})
    if mapping and not claim:
        raise _invalid("A mapping needs the claim whose values it maps.", "claim")
    if default_role not in MAPPABLE_ROLES:
        raise _invalid("The default role is admin, member or viewer.", "default_role")
    return {
        "issuer": issuer,
        "client_id": client_id,
        "client_secret": client_secret,
        "scopes": " ".join(words),
        "allowed_domains": _domains_clean(allowed_domains),
        "claim": claim,
        "mapping": mapping,
        "default_role": default_role,
        "sso_required": bool(sso_required),
        "warnings": warnings,
    }


@transaction.atomic
def sso_provider_set(*, org: Organization, actor, actor_role: str, **fields) -> SsoProvider:
    """Create or replace the organization's provider (fields: `sso_provider_validate`'s).
    `client_secret=None` keeps the stored one ("" removes it: a public client that
    authenticates with PKCE alone)."""
    _require_admin(actor_role)
    # Requests carry a cached OrgRef; the provider row needs the organization itself.
    org = Organization.objects.get(pk=org.id)
    clean = sso_provider_validate(org=org, **fields)
    client_secret = clean["client_secret"]
    provider = SsoProvider.objects.select_for_update().filter(organization_id=org.id).first()
    before = provider_snapshot(provider) if provider else None
    if provider is None:
        provider = SsoProvider(organization=org)
        if client_secret is None:
            client_secret = ""
    for name in ("issuer", "client_id", "scopes", "allowed_domains", "claim", "mapping"):
        setattr(provider, name, clean[name])
    provider.default_role = clean["default_role"]
    provider.sso_required = clean["sso_required"]
    if client_secret is not None:
        provider.client_secret_encrypted = crypto.encrypt(client_secret)
        provider.client_secret_hint = crypto.mask(client_secret)
    provider.save()
    after = provider_snapshot(provider)
    changed = sorted(k for k in after if before is None or before.get(k) != after[k])
    if client_secret is not None and before is not None and "client_secret" not in changed:
        # Same hint, new secret: the hint shows four characters, not whether they moved.
        changed.append("client_secret")
    audit_record(
        org=org,
        action="sso.provider_created" if before is None else "sso.provider_updated",
        actor=_actor_label(actor),
        target=provider.issuer,
        details={"before": before, "after": after, "changed": sorted(changed)},
    )
    provider.save_warnings = clean["warnings"]
    return provider


@transaction.atomic
def sso_provider_delete(*, org: Organization, actor, actor_role: str) -> bool:
    _require_admin(actor_role)
    provider = SsoProvider.objects.select_for_update().filter(organization_id=org.id).first()
    if provider is None:
        return False
    before = provider_snapshot(provider)
    provider.delete()
    audit_record(
        org=org,
        action="sso.provider_deleted",
        actor=_actor_label(actor),
        target=before["issuer"],
        details={"before": before},
    )
    return True
