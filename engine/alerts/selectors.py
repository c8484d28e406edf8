"""Reads of alerts, in the current schema."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from cadence_site.errors import ApplicationError, NotFoundError
from engine.alerts.models import AlertEvent, AlertRule, AlertRuleShare
from tenants.roles import Role, role_at_least
from tenants.teams.models import ShareLevel
from tenants.teams.scoping import TeamScope, maintained_team_ids, scoped, visible_team_ids

HISTORY_PAGE = 50
HISTORY_MAX_PAGE = 200


def alert_rules_visible(*, scope: TeamScope | None) -> QuerySet[AlertRule]:
    """The rules the caller sees (tenants/teams/scoping.py): the organization's, their teams',
    and those shared with their teams. `scope` None: every rule (a trusted caller)."""
    rules = AlertRule.objects.all()
    return rules if scope is None else scoped(rules, scope, kind="alert_rule")


def alert_rule_list(*, scope: TeamScope | None = None) -> list[AlertRule]:
    return list(alert_rules_visible(scope=scope))


def alert_rule_get(*, rule_id: Any, scope: TeamScope | None = None) -> AlertRule:
    """Another team's rule is the same 404 as a rule that does not exist."""
    try:
        rule = alert_rules_visible(scope=scope).filter(pk=uuid.UUID(str(rule_id))).first()
    except ValueError:
        rule = None
    if rule is None:
        raise NotFoundError("No such alert rule.", "alert_rule_not_found")
    return rule


def alert_rules_managed(*, scope: TeamScope | None, rules: list[AlertRule]) -> set:
    """Which of `rules` the caller manages, by access_level's rule (tenants/teams/scoping.py:
    admins all; a team's maintainers the team's; a team a rule is shared with to manage), in two
    queries at most whatever the count."""
    if scope is None or scope.everything:
        return {rule.pk for rule in rules}
    if not role_at_least(scope.role, Role.MEMBER):
        return set()
    maintained = maintained_team_ids(scope) or set()
    managed = {rule.pk for rule in rules if rule.team_id is not None and rule.team_id in maintained}
    teams = visible_team_ids(scope) or set()
    if teams and rules:
        managed |= set(
            AlertRuleShare.objects.filter(
                rule_id__in=[rule.pk for rule in rules],
                team_id__in=teams,
                level=ShareLevel.MANAGE,
            ).values_list("rule_id", flat=True)
        )
    return managed


def _bad(message: str, field: str) -> ApplicationError:
    return ApplicationError(message, "invalid", {"field": field})


def _cursor(event: AlertEvent) -> str:
    raw = json.dumps([event.created_at.isoformat(), str(event.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(value: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, event_id = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        return datetime.fromisoformat(at), uuid.UUID(event_id)
    except (ValueError, TypeError, binascii.Error):
        raise _bad("cursor is not one this API gave out.", "cursor") from None


def alert_event_list(
    *, rule: AlertRule, principal, role: str | None, params: dict[str, str], org=None
) -> tuple[list[AlertEvent], str | None]:
    """A page of a rule's firings, newest first. Members and viewers see the firings about runs
    they may read (their own, engine/runs/selectors.py) and those about no run (windows)."""
    from engine.runs.selectors import runs_visible

    unknown = sorted(set(params) - {"limit", "cursor"})
    if unknown:
        raise _bad(
            f"Unknown parameter {unknown[0]!r}; the parameters are limit, cursor.", unknown[0]
        )
    try:
        limit = int(params.get("limit", HISTORY_PAGE))
    except ValueError:
        limit = 0
    if not 1 <= limit <= HISTORY_MAX_PAGE:
        raise _bad(f"limit must be an integer from 1 to {HISTORY_MAX_PAGE}.", "limit")
    events = AlertEvent.objects.filter(rule=rule)
    if not role_at_least(role, Role.ADMIN):
        visible = runs_visible(principal=principal, role=role, org=org).values("id")
        events = events.filter(Q(run_id__isnull=True) | Q(run_id__in=visible))
    if params.get("cursor"):
        at, after = _decode(params["cursor"])
        events = events.filter(Q(created_at__lt=at) | Q(created_at=at, id__lt=after))
    page = list(events.order_by("-created_at", "-id")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return page, _cursor(page[-1]) if more else None
