"""Reads behind the two admin dashboards: the operators' (every organization) and an organization's.

The operator's figures span every organization's schema. They come from one UNION ALL query per
chunk of schemas (never one query per organization) and are cached for a minute, so opening the
dashboard costs the same at 10 organizations as at 1,000 after the first look.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Count
from django.utils import timezone

DAYS = 14
_SCHEMA_CHUNK = 200
_CACHE_SECONDS = 60
# Tokens are read from the run's usage JSON; a value that is not a number counts as none.
_TOKENS = (
    "CASE WHEN jsonb_typeof(usage->'total_tokens') = 'number' "
    "THEN (usage->>'total_tokens')::numeric ELSE 0 END"
)


def _days(today: date) -> list[date]:
    return [today - timedelta(days=n) for n in range(DAYS - 1, -1, -1)]


def _since(today: date) -> datetime:
    return datetime.combine(today - timedelta(days=DAYS - 1), datetime.min.time(), tzinfo=UTC)


def _existing_schemas(schemas: list[str]) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", [schemas])
        found = {row[0] for row in cursor.fetchall()}
    return [s for s in schemas if s in found]


def _union(schemas: list[str], select: str, params_each: list) -> tuple[str, list]:
    """`select` has `{schema}` for the quoted schema and `%s` parameters; one part per schema."""
    parts, params = [], []
    for schema in schemas:
        parts.append(select.replace("{schema}", connection.ops.quote_name(schema)))
        params.extend([schema, *params_each])
    return " UNION ALL ".join(parts), params


def runs_per_day(schemas: list[str], today: date | None = None) -> dict:
    """Runs, failures and tokens per day over the last DAYS days, summed over `schemas`, and the
    same totals per schema."""
    from engine.models import Run

    today = today or timezone.now().date()
    since = _since(today)
    table = Run._meta.db_table
    select = (
        "SELECT %s::text, (started_at AT TIME ZONE 'UTC')::date, count(*), "
        "count(*) FILTER (WHERE status = 'failed'), coalesce(sum(" + _TOKENS + "), 0) "
        f"FROM {{schema}}.{table} WHERE started_at >= %s GROUP BY 2"
    )
    per_day: dict[date, list[int]] = defaultdict(lambda: [0, 0, 0])
    per_schema: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    existing = _existing_schemas(schemas)
    for start in range(0, len(existing), _SCHEMA_CHUNK):
        sql, params = _union(existing[start : start + _SCHEMA_CHUNK], select, [since])
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            for schema, day, runs, failed, tokens in cursor.fetchall():
                for bucket in (per_day[day], per_schema[schema]):
                    bucket[0] += runs
                    bucket[1] += failed
                    bucket[2] += int(tokens)
    days = _days(today)
    return {
        "labels": [d.isoformat() for d in days],
        "runs": [per_day[d][0] for d in days],
        "failed": [per_day[d][1] for d in days],
        "tokens": [per_day[d][2] for d in days],
        "per_schema": {
            s: {"runs": v[0], "failed": v[1], "tokens": v[2]} for s, v in per_schema.items()
        },
    }


def unhealthy_orchestrators(schemas: list[str], limit: int = 50) -> list[dict]:
    from orchestrators.models import OrchestratorInstance

    table = OrchestratorInstance._meta.db_table
    select = (
        "SELECT %s::text, slug, name, status, status_message, updated_at "
        f"FROM {{schema}}.{table} WHERE status = %s"
    )
    rows: list[dict] = []
    existing = _existing_schemas(schemas)
    for start in range(0, len(existing), _SCHEMA_CHUNK):
        sql, params = _union(
            existing[start : start + _SCHEMA_CHUNK], select, [OrchestratorInstance.Status.FAILED]
        )
        with connection.cursor() as cursor:
            cursor.execute(f"{sql} ORDER BY 6 DESC LIMIT %s", [*params, limit])
            for schema, slug, name, status, message, updated in cursor.fetchall():
                rows.append(
                    {
                        "schema": schema,
                        "slug": slug,
                        "name": name,
                        "status": status,
                        "message": message[:300],
                        "updated_at": updated,
                    }
                )
    rows.sort(key=lambda r: r["updated_at"], reverse=True)
    return rows[:limit]


def operator_dashboard() -> dict:
    from tenants.models import Organization, Plan

    orgs = Organization.objects.exclude(
        schema_name__in=[settings.PUBLIC_SCHEMA_NAME, settings.CADENCE_TEMPLATE_SCHEMA]
    )
    by_status = dict(orgs.values_list("status").annotate(n=Count("id")).order_by())
    slug_of = dict(orgs.values_list("schema_name", "slug"))

    def deployment() -> dict:
        schemas = sorted(slug_of)
        return {"daily": runs_per_day(schemas), "unhealthy": unhealthy_orchestrators(schemas)}

    figures = cache.get_or_set("cadence:dashboard:operator", deployment, _CACHE_SECONDS)
    busiest = sorted(
        figures["daily"]["per_schema"].items(), key=lambda item: item[1]["runs"], reverse=True
    )[:10]
    return {
        "org_total": sum(by_status.values()),
        "org_active": by_status.get(Organization.Status.ACTIVE, 0),
        "org_suspended": by_status.get(Organization.Status.SUSPENDED, 0),
        "recent_orgs": list(orgs.select_related("plan").order_by("-created_at")[:8]),
        "plans": list(Plan.objects.annotate(org_count=Count("organizations")).order_by("name")),
        "chart": {k: figures["daily"][k] for k in ("labels", "runs", "failed", "tokens")},
        "runs_total": sum(figures["daily"]["runs"]),
        "tokens_total": sum(figures["daily"]["tokens"]),
        "busiest": [{"slug": slug_of.get(s, s), **v} for s, v in busiest],
        "unhealthy": [
            {**row, "org": slug_of.get(row["schema"], row["schema"])}
            for row in figures["unhealthy"]
        ],
    }


def _usage(used: int, limit: int | None) -> dict:
    percent = min(100, round(100 * used / limit)) if limit else 0
    return {"used": used, "limit": limit, "percent": percent, "full": bool(limit) and used >= limit}


def organization_dashboard(*, org, role: str, scope=None) -> dict:
    """What an organization's dashboard shows; runs' details only to admins and owners (members
    read their own through the Runs page's rules)."""
    from engine.models import Run
    from orchestrators.models import OrchestratorInstance
    from tenants.limits.plans import limits_compute
    from tenants.limits.usage import UsageQuery, usage_totals
    from tenants.models import ApiKey, Membership
    from tenants.roles import Role, role_at_least
    from tenants.selectors import organization_get

    organization = organization_get(org_id=org.id)
    plan = organization.plan
    # What applies: the plan with this organization's override, as the quotas enforce it.
    limits = limits_compute(org=organization)
    today = timezone.now().date()
    month = usage_totals(org_id=org.id, query=UsageQuery(today.replace(day=1), today, ()))
    members = Membership.objects.filter(organization_id=org.id).select_related("user")
    from tenants.teams.scoping import scoped

    # The orchestrators the viewer may see (tenants/teams/scoping.py); the plan counts them all.
    shown = OrchestratorInstance.objects.all()
    if scope is not None:
        shown = scoped(shown, scope)
    orchestrators = list(
        shown.only(
            "id", "slug", "name", "status", "status_message", "framework", "updated_at"
        ).order_by("slug")[:50]
    )
    orchestrator_count = OrchestratorInstance.objects.count()
    daily = runs_per_day([org.schema_name])
    active_keys = ApiKey.objects.filter(organization_id=org.id, revoked_at__isnull=True).count()
    member_count = members.count()
    is_admin = role_at_least(role, Role.ADMIN)
    data = {
        "member_count": member_count,
        "api_key_count": active_keys,
        "orchestrators": orchestrators,
        "orchestrator_count": orchestrator_count,
        "orchestrators_failed": OrchestratorInstance.objects.filter(
            status=OrchestratorInstance.Status.FAILED
        ).count(),
        "chart": {k: daily[k] for k in ("labels", "runs", "failed", "tokens")},
        "runs_total": sum(daily["runs"]),
        "runs_failed": sum(daily["failed"]),
        "tokens_total": sum(daily["tokens"]),
        "plan": plan,
        "usage": {
            "members": _usage(member_count, limits.max_members),
            "api_keys": _usage(active_keys, limits.max_api_keys),
            "orchestrators": _usage(orchestrator_count, limits.max_orchestrators),
            "tokens_month": _usage(month["total_tokens"], limits.tokens_per_month),
        },
        "members": list(members.order_by("user__username")[:8]),
        "show_runs": is_admin,
    }
    if is_admin:
        fields = (
            "id",
            "orchestrator_slug",
            "trigger",
            "status",
            "started_at",
            "duration_ms",
            "error",
        )
        data["recent_runs"] = list(Run.objects.only(*fields)[:8])
        data["recent_failures"] = list(
            Run.objects.filter(status=Run.Status.FAILED).only(*fields)[:5]
        )
    return data
