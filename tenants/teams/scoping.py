"""Which teams' resources a caller sees, uses and manages: the one rule every surface applies.

- Owners and admins see and manage every resource of the organization.
- A member or viewer sees the organization-wide resources (`team` null), those of the teams they
  belong to, and those shared with one of their teams (tenants/teams/models.py: read, use or
  manage). Members use what they see (viewers read); a team's maintainers manage its resources.
- An API key acts for the user who vouches for it (tenants/rights.py: its creator, or the
  creator at the root of a chain of minted keys): an admin-role key of an admin sees
  everything; a lower key sees what that user's teams give.
- A team-limited key narrows further: that team's resources, while its user may still see them
  (an admin or owner may; anyone else while they belong to the team), and the
  organization-wide ones. It manages organization-wide resources never.

Rights are current rights: team memberships enter each scoped query as a subquery, so leaving a
team (or the organization, which ends every team membership) takes effect at the next request.
Call inside the organization's schema.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db.models import BooleanField, Expression, F, Q, QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.db.models.expressions import Col

from cadence_site.errors import ApplicationError, ForbiddenError
from engine.alerts.models import AlertRuleShare
from tenants.roles import Role, role_at_least
from tenants.teams.models import (
    LEVEL_RANK,
    LLMConfigShare,
    OrchestratorShare,
    ShareLevel,
    Team,
    TeamMembership,
    TeamRole,
)

# Kinds of shareable resources: the share model and its foreign key to the resource.
SHARES: dict[str, tuple[type, str]] = {
    "orchestrator": (OrchestratorShare, "orchestrator_id"),
    "llm_config": (LLMConfigShare, "llm_config_id"),
    "alert_rule": (AlertRuleShare, "rule_id"),
}
# A team limit that matches no team (a chain of keys limited to different teams).
_NO_TEAM = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class TeamScope:
    everything: bool
    role: str | None = None  # the caller's effective organization role
    user_id: int | None = None  # whose team memberships count
    team_limit: uuid.UUID | None = None
    # The limit's team counts without a membership: the vouching user is an admin or owner.
    limit_trusted: bool = False

    @property
    def limited(self) -> bool:
        return self.team_limit is not None


EVERYTHING = TeamScope(everything=True, role=Role.OWNER)


def team_own_scope(team_id: uuid.UUID) -> TeamScope:
    """What a team itself sees (its own, the organization-wide and what is shared with it),
    whoever asks: the scope a team's alert rule judges runs in (engine/alerts/evaluate.py)."""
    return TeamScope(everything=False, role=Role.MEMBER, team_limit=team_id, limit_trusted=True)


def team_scope(principal, role: str | None) -> TeamScope:
    """The scope of a request's caller (a user, or an ApiKeyPrincipal) with its current role."""
    key = getattr(principal, "api_key", None)
    if key is not None:
        return key_team_scope(key=key, role=role)
    if role_at_least(role, Role.ADMIN):
        return TeamScope(everything=True, role=role)
    return TeamScope(everything=False, role=role, user_id=getattr(principal, "pk", None))


def key_team_scope(*, key, role: str | None) -> TeamScope:
    """A key's scope: its own team limit (or its minting keys'), its vouching user's teams."""
    from tenants.models import ApiKey
    from tenants.rights import MAX_CHAIN, _user_role

    limit = key.team_id
    current = key
    for _ in range(MAX_CHAIN):
        if current.created_by_key_id is None:
            break
        current = (
            ApiKey.objects.filter(pk=current.created_by_key_id)
            .only("id", "team_id", "created_by_id", "created_by_key_id")
            .first()
        )
        if current is None:
            return TeamScope(everything=False, role=role)
        if current.team_id is not None:
            limit = current.team_id if limit in (None, current.team_id) else _NO_TEAM
    user_id = current.created_by_id if current.created_by_key_id is None else None
    if limit is None:
        if role_at_least(role, Role.ADMIN):
            return TeamScope(everything=True, role=role)
        return TeamScope(everything=False, role=role, user_id=user_id)
    trusted = user_id is not None and role_at_least(
        _user_role(user_id=user_id, org_id=key.organization_id), Role.ADMIN
    )
    return TeamScope(
        everything=False, role=role, user_id=user_id, team_limit=limit, limit_trusted=trusted
    )


# --- which teams ------------------------------------------------------------------------------


def _team_ids(scope: TeamScope):
    """The caller's teams as something a query can take (a subquery, or a literal list)."""
    if scope.team_limit is not None:
        if scope.limit_trusted:
            return [scope.team_limit]
        if scope.user_id is None:
            return []
        return TeamMembership.objects.filter(
            user_id=scope.user_id, team_id=scope.team_limit
        ).values("team_id")
    if scope.user_id is None:
        return []
    return TeamMembership.objects.filter(user_id=scope.user_id).values("team_id")


def visible_team_ids(scope: TeamScope) -> set[uuid.UUID] | None:
    """The teams whose resources the caller sees (None: every team's)."""
    if scope.everything:
        return None
    ids = _team_ids(scope)
    return set(ids) if isinstance(ids, list) else {row["team_id"] for row in ids}


def maintained_team_ids(scope: TeamScope) -> set[uuid.UUID] | None:
    """The teams whose resources the caller manages (None: every team's)."""
    if scope.everything:
        return None
    if not role_at_least(scope.role, Role.MEMBER):
        return set()
    if scope.limit_trusted and role_at_least(scope.role, Role.ADMIN):
        return {scope.team_limit}
    if scope.user_id is None:
        return set()
    rows = TeamMembership.objects.filter(user_id=scope.user_id, role=TeamRole.MAINTAINER)
    if scope.team_limit is not None:
        rows = rows.filter(team_id=scope.team_limit)
    return set(rows.values_list("team_id", flat=True))


# The share levels at `level` or above, per level (iterating the enum per query costs ~50 µs).
_LEVELS_FROM = {
    base.value: [lv.value for lv in ShareLevel if LEVEL_RANK[lv] >= LEVEL_RANK[base]]
    for base in ShareLevel
}


def _levels_from(level: str) -> list[str]:
    return _LEVELS_FROM[str(level)]


def _local_col(query, expr):
    """The column of a plain local field (`team_id`, `pk`, `orchestrator_id`) of the query's own
    model, without F's general path (setup_joins and trimming, ~0.1 ms a scoped query on the
    conversation list); None for anything else, which F resolves as usual. An expression that is
    resolved already (Django resolves a filter's condition twice) is kept."""
    if isinstance(expr, Col):
        return expr
    if query is None or not isinstance(expr, F) or LOOKUP_SEP in expr.name:
        return None
    opts = query.get_meta()
    try:
        field = opts.pk if expr.name == "pk" else opts.get_field(expr.name)
    except FieldDoesNotExist:
        return None
    if not getattr(field, "concrete", False) or field.model is not opts.concrete_model:
        return None
    if field.is_relation and expr.name != field.attname:
        return None  # `team` names the relation; only its column (`team_id`) is local
    return field.get_col(query.get_initial_alias())


class InScope(Expression):
    """`team IS NULL OR team IN (the caller's teams) OR id IN (shared with them)` as one boolean
    expression. The same rule as `scope_q`, compiled without the ORM's subquery machinery: that
    took ~0.7 ms per request on the busiest read paths (benchmarks/request_overhead.py --mode
    teams), the SQL itself ~0.1 ms. The two columns are the query's own (aliases relabel in
    subqueries); the subselects name only the teams' tables, under their own aliases.

    Why subselects rather than the caller's team ids resolved once per request and passed as
    arrays: measured on the conversation list at 50 teams and 1,000 resources (server time,
    EXPLAIN ANALYZE, median of 40), the subselects cost 1.38 ms against 0.95 ms unscoped; arrays
    1.09 ms plus 0.31 ms for the query that resolves them (and its round trips), so no gain on a
    path that scopes one query, and the memberships stay read in the same statement."""

    output_field = BooleanField()
    conditional = True

    def __init__(self, team, ident, *, scope: TeamScope, kind: str, level: str):
        super().__init__()
        self.team, self.ident = team, ident
        self.scope, self.kind, self.level = scope, kind, level

    def get_source_expressions(self):
        return [self.team, self.ident]

    def set_source_expressions(self, exprs):
        self.team, self.ident = exprs

    def resolve_expression(
        self, query=None, allow_joins=True, reuse=None, summarize=False, for_save=False
    ):
        clone = self.copy()
        clone.is_summary = summarize
        clone.team, clone.ident = (
            _local_col(query, expr)
            or expr.resolve_expression(query, allow_joins, reuse, summarize, for_save)
            for expr in (self.team, self.ident)
        )
        return clone

    def _teams_sql(self, alias: str) -> tuple[str, list]:
        scope = self.scope
        membership = TeamMembership._meta.db_table
        if scope.team_limit is not None and scope.limit_trusted:
            return "%s", [scope.team_limit]
        if scope.user_id is None:
            return "NULL", []
        sql = f'SELECT {alias}."team_id" FROM "{membership}" {alias} WHERE {alias}."user_id" = %s'
        params: list = [scope.user_id]
        if scope.team_limit is not None:
            sql += f' AND {alias}."team_id" = %s'
            params.append(scope.team_limit)
        return sql, params

    def as_sql(self, compiler, connection):
        team_sql, team_params = compiler.compile(self.team)
        scope = self.scope
        if scope.user_id is None and not (scope.team_limit is not None and scope.limit_trusted):
            # In no team: `IN (NULL)` is never true, so only the organization's resources.
            return f"({team_sql} IS NULL)", team_params
        id_sql, id_params = compiler.compile(self.ident)
        share_model, share_fk = SHARES[self.kind]
        mine, mine_params = self._teams_sql("scope_m")
        theirs, theirs_params = self._teams_sql("scope_n")
        levels = _levels_from(self.level)
        # Every level includes read (the share tables' check constraint): no filter then.
        level_sql = (
            f'scope_s."level" IN ({", ".join(["%s"] * len(levels))}) AND '
            if len(levels) < len(_LEVELS_FROM)
            else ""
        )
        if not level_sql:
            levels = []
        shared = (
            f'SELECT scope_s."{share_fk}" FROM "{share_model._meta.db_table}" scope_s '
            f'WHERE {level_sql}scope_s."team_id" IN ({theirs})'
        )
        sql = f"({team_sql} IS NULL OR {team_sql} IN ({mine}) OR {id_sql} IN ({shared}))"
        params = [
            *team_params,
            *team_params,
            *mine_params,
            *id_params,
            *levels,
            *theirs_params,
        ]
        return sql, params


def scope_q(
    scope: TeamScope,
    *,
    kind: str = "orchestrator",
    team_field: str = "team",
    shared_field: str = "pk",
    level: str = ShareLevel.READ,
):
    """The filter for the resources the caller sees: organization-wide, their teams', and those
    shared with their teams at `level` or above. `shared_field` names the shared resource's id
    (an orchestrator's own `pk`, or `orchestrator_id` on its conversations and runs)."""
    if scope.everything:
        return Q()
    return InScope(
        F(f"{team_field}_id" if not team_field.endswith("_id") else team_field),
        F(shared_field),
        scope=scope,
        kind=kind,
        level=level,
    )


def scoped(queryset: QuerySet, scope: TeamScope, **kwargs: Any) -> QuerySet:
    return queryset if scope.everything else queryset.filter(scope_q(scope, **kwargs))


# --- one resource -----------------------------------------------------------------------------


def access_level(scope: TeamScope, *, kind: str, obj) -> str | None:
    """What the caller may do with `obj` (None: nothing, it is invisible), capped by their role:
    viewers read. Manage includes use, use includes read."""
    if scope.everything:
        return ShareLevel.MANAGE
    ranked: list[str] = []
    teams = visible_team_ids(scope) or set()
    if obj.team_id is None:
        ranked.append(ShareLevel.USE)
    elif obj.team_id in teams:
        maintained = maintained_team_ids(scope)
        ranked.append(ShareLevel.MANAGE if obj.team_id in maintained else ShareLevel.USE)
    share_model, share_fk = SHARES[kind]
    if teams:
        ranked += list(
            share_model.objects.filter(**{share_fk: obj.pk}, team_id__in=teams).values_list(
                "level", flat=True
            )
        )
    if not ranked:
        return None
    best = max(ranked, key=lambda lv: LEVEL_RANK[ShareLevel(lv)])
    if not role_at_least(scope.role, Role.MEMBER):
        return ShareLevel.READ
    return best


def require_level(scope: TeamScope | None, *, kind: str, obj, level: str, what: str) -> None:
    """403 when the caller sees `obj` but may not do this to it. Views fetch through `scoped`
    first, so an invisible resource is already a 404."""
    if scope is None:
        return
    if obj.team_id is None and level != ShareLevel.MANAGE:
        # An organization-wide resource: every member uses it, viewers read it (access_level's
        # answer without its reads: a share can only add a level above these).
        if level == ShareLevel.READ or scope.everything or role_at_least(scope.role, Role.MEMBER):
            return
    have = access_level(scope, kind=kind, obj=obj)
    if have is not None and LEVEL_RANK[ShareLevel(have)] >= LEVEL_RANK[ShareLevel(level)]:
        return
    if level == ShareLevel.MANAGE:
        if obj.team_id is None:
            raise ForbiddenError(
                f"Organization-wide {what}s are managed by the organization's admins and owners.",
                "role_required",
            )
        raise ForbiddenError(
            f"Only the organization's admins, the team's maintainers and teams it is shared "
            f"with to manage may change this {what}.",
            "team_maintainer_required",
        )
    raise ForbiddenError(f"This {what} is shared with your team to read only.", "share_level")


def require_create_in(scope: TeamScope | None, *, team: Team | None, what: str) -> None:
    """Creating (or moving) a resource into `team`: its maintainers and the admins; into the
    organization at large (team None): admins and owners, with a key limited to no team."""
    if scope is None or scope.everything:
        return
    if team is None:
        raise ForbiddenError(
            f"Organization-wide {what}s are created by the organization's admins and owners; "
            "name a team you maintain.",
            "role_required",
        )
    if team.pk not in (maintained_team_ids(scope) or set()):
        raise ForbiddenError(
            f"Only the team's maintainers and the organization's admins create {what}s in it.",
            "team_maintainer_required",
        )


def team_resolve(team_id, *, field: str = "team") -> Team | None:
    """The team an input names (a UUID or null): a 400 naming the field when there is none."""
    if team_id in (None, ""):
        return None
    try:
        team = Team.objects.filter(pk=uuid.UUID(str(team_id))).first()
    except ValueError:
        team = None
    if team is None:
        raise ApplicationError(
            "No such team in this organization.", "unknown_team", {"field": field}
        )
    return team
