"""Writes on an organization's teams, each audited. Call inside the organization's schema."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from cadence_site.errors import ApplicationError, ForbiddenError
from tenants.models import Membership, Organization
from tenants.roles import Role, role_at_least
from tenants.services import _actor_label, audit_record
from tenants.teams.models import Team, TeamMembership, TeamRole
from tenants.teams.selectors import team_manageable_by

User = get_user_model()


def _require_org_admin(org_role: str) -> None:
    if not role_at_least(org_role, Role.ADMIN):
        raise ForbiddenError(
            f"Managing teams needs the admin role or higher; yours is {org_role}.",
            "role_required",
        )


def _require_team_manager(*, org: Organization, team: Team, org_role: str, actor) -> None:
    # An API key is never a team member: only its organization role counts.
    user_id = actor.pk if isinstance(actor, User) else None
    if not team_manageable_by(org=org, team=team, org_role=org_role, user_id=user_id):
        raise ForbiddenError(
            "Only the organization's admins and the team's maintainers manage its members.",
            "team_maintainer_required",
        )


@transaction.atomic
def team_create(
    *, org: Organization, name: str, slug: str = "", description: str = "", org_role: str, actor
) -> Team:
    _require_org_admin(org_role)
    slug = slug or slugify(name)[:50]
    if not slug:
        raise ApplicationError(
            "The team needs a name with letters or digits.", "invalid", {"field": "name"}
        )
    try:
        with transaction.atomic():
            team = Team.objects.create(name=name, slug=slug, description=description)
    except IntegrityError:
        raise ApplicationError(
            f"A team with the slug {slug!r} exists already.", "team_exists", {"field": "slug"}
        ) from None
    audit_record(
        org=org,
        action="team.created",
        actor=_actor_label(actor),
        target=team.slug,
        details={"name": name},
    )
    return team


@transaction.atomic
def team_update(*, org: Organization, team: Team, org_role: str, actor, **fields) -> Team:
    _require_org_admin(org_role)
    before = {name: getattr(team, name) for name in fields}
    for name, value in fields.items():
        setattr(team, name, value)
    try:
        with transaction.atomic():
            team.save()
    except IntegrityError:
        raise ApplicationError(
            f"A team with the slug {team.slug!r} exists already.", "team_exists", {"field": "slug"}
        ) from None
    audit_record(
        org=org,
        action="team.updated",
        actor=_actor_label(actor),
        target=team.slug,
        details={"before": before, "after": fields},
    )
    return team


@transaction.atomic
def team_delete(*, org: Organization, team: Team, org_role: str, actor) -> None:
    _require_org_admin(org_role)
    from engine.alerts.models import AlertRule
    from orchestrators.models import LLMConfig, OrchestratorInstance

    # Its resources would otherwise become the whole organization's: they move first.
    owned = sorted(
        [
            f"orchestrator {slug}"
            for slug in OrchestratorInstance.objects.filter(team=team).values_list(
                "slug", flat=True
            )
        ]
        + [
            f"LLM configuration {name}"
            for name in LLMConfig.objects.filter(team=team).values_list("name", flat=True)
        ]
        + [
            f"alert rule {name}"
            for name in AlertRule.objects.filter(team=team).values_list("name", flat=True)
        ]
    )
    if owned:
        raise ApplicationError(
            f"The team still owns {', '.join(owned)}: move or delete them first.",
            "team_in_use",
            {"resources": owned},
            status=409,
        )
    slug = team.slug
    team.delete()
    audit_record(org=org, action="team.deleted", actor=_actor_label(actor), target=slug)


def _user_label(user_id: int) -> str:
    user = User.objects.filter(pk=user_id).only("username").first()
    return user.get_username() if user else f"user {user_id}"


@transaction.atomic
def team_member_set(
    *, org: Organization, team: Team, user_id: int, role: str, org_role: str, actor
) -> TeamMembership:
    """Adds the user to the team, or changes their team role. They must be in the organization."""
    _require_team_manager(org=org, team=team, org_role=org_role, actor=actor)
    if role not in TeamRole.values:
        raise ApplicationError(f"Unknown team role {role!r}.", "invalid", {"field": "role"})
    if not Membership.objects.filter(organization_id=org.id, user_id=user_id).exists():
        raise ApplicationError(
            "Only members of the organization can join its teams.",
            "not_an_org_member",
            {"field": "user"},
        )
    # Serialises concurrent changes to one team's roster (the unique constraint holds the rest).
    Team.objects.select_for_update().filter(pk=team.pk).first()
    membership, created = TeamMembership.objects.update_or_create(
        team=team, user_id=user_id, defaults={"role": role}
    )
    audit_record(
        org=org,
        action="team.member_added" if created else "team.member_role_changed",
        actor=_actor_label(actor),
        target=f"{team.slug}:{_user_label(user_id)}",
        details={"role": role},
    )
    return membership


@transaction.atomic
def team_member_remove(
    *, org: Organization, team: Team, user_id: int, org_role: str, actor
) -> None:
    _require_team_manager(org=org, team=team, org_role=org_role, actor=actor)
    deleted, _ = TeamMembership.objects.filter(team=team, user_id=user_id).delete()
    if not deleted:
        raise ApplicationError("That user is not in this team.", "not_found", {"field": "user"})
    audit_record(
        org=org,
        action="team.member_removed",
        actor=_actor_label(actor),
        target=f"{team.slug}:{_user_label(user_id)}",
    )


def team_memberships_end_for_user(*, user_id: int) -> int:
    """Called when a user leaves the organization (inside its schema): their team rows go too."""
    deleted, _ = TeamMembership.objects.filter(user_id=user_id).delete()
    return deleted


# --- sharing a resource with another team ---------------------------------------------------


SHARE_WHAT = {
    "orchestrator": "orchestrator",
    "llm_config": "LLM configuration",
    "alert_rule": "alert rule",
}


def _share_target(kind: str, obj) -> str:
    # As each kind's own audit events name it.
    if kind == "alert_rule":
        return f"alert_rule:{obj.pk}"
    return obj.slug if kind == "orchestrator" else obj.name


@transaction.atomic
def resource_share_set(*, kind: str, obj, team: Team, level: str, actor=None, scope=None):
    """Shares an orchestrator, an LLM configuration or an alert rule with `team` at `level` (or
    changes the level). The caller manages the resource (tenants/teams/scoping.py). Audited."""
    from tenants.audit.changes import audit_change
    from tenants.teams.models import ShareLevel
    from tenants.teams.scoping import SHARES, require_level

    what = SHARE_WHAT[kind]
    require_level(scope, kind=kind, obj=obj, level=ShareLevel.MANAGE, what=what)
    if level not in ShareLevel.values:
        raise ApplicationError(f"Unknown level {level!r}.", "invalid", {"field": "level"})
    if obj.team_id == team.pk:
        raise ApplicationError(
            f"The {what} belongs to {team.slug} already.", "own_team", {"field": "team"}
        )
    share_model, share_fk = SHARES[kind]
    before = (
        share_model.objects.filter(**{share_fk: obj.pk}, team=team)
        .values_list("level", flat=True)
        .first()
    )
    if before is not None and before != level:
        _llm_share_narrowing_check(kind=kind, obj=obj, team=team, level=level)
    share, _ = share_model.objects.update_or_create(
        **{share_fk: obj.pk}, team=team, defaults={"level": level}
    )
    if before != level:
        audit_change(
            action=f"{kind}.shared",
            target=_share_target(kind, obj),
            actor=actor,
            before={"team": team.slug, "level": before} if before else None,
            after={"team": team.slug, "level": level},
        )
    return share


def _llm_share_narrowing_check(*, kind: str, obj, team: Team, level: str | None) -> None:
    """A team's orchestrators that run on a shared LLM configuration keep it: unsharing (or
    narrowing to read) while they do is a 409 naming them."""
    from tenants.teams.models import ShareLevel

    if kind != "llm_config" or level in (ShareLevel.USE, ShareLevel.MANAGE):
        return
    using = sorted(obj.orchestrators.filter(team=team).values_list("slug", flat=True))
    if using:
        raise ApplicationError(
            f"Orchestrators of {team.slug} run on it: {', '.join(using)}.",
            "in_use",
            {"field": "team", "orchestrators": using},
            status=409,
        )


@transaction.atomic
def resource_share_remove(*, kind: str, obj, team: Team, actor=None, scope=None) -> None:
    from tenants.audit.changes import audit_change
    from tenants.teams.models import ShareLevel
    from tenants.teams.scoping import SHARES, require_level

    what = SHARE_WHAT[kind]
    require_level(scope, kind=kind, obj=obj, level=ShareLevel.MANAGE, what=what)
    share_model, share_fk = SHARES[kind]
    share = share_model.objects.select_for_update().filter(**{share_fk: obj.pk}, team=team).first()
    if share is None:
        raise ApplicationError(
            f"The {what} is not shared with {team.slug}.",
            "not_found",
            {"field": "team"},
            status=404,
        )
    _llm_share_narrowing_check(kind=kind, obj=obj, team=team, level=None)
    share.delete()
    audit_change(
        action=f"{kind}.unshared",
        target=_share_target(kind, obj),
        actor=actor,
        before={"team": team.slug, "level": share.level},
    )
