"""Usage: recorded per organization, principal, orchestrator, model and UTC day; read by range.

PostgreSQL is the system of record (Redis only counts for the limiters): `usage_add` increments
the day's row in one statement (INSERT … ON CONFLICT DO UPDATE), so concurrent turns add up
without a lock and a crash between two turns loses nothing that was recorded.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import Sum
from django.utils import timezone

from cadence_site.errors import ApplicationError
from cadence_site.prepared import bound_cursor
from tenants.limits.models import UsageDay

GROUPS = {
    "day": "day",
    "key": "principal",
    "principal": "principal",
    "orchestrator": "orchestrator",
    "model": "model",
}
METRICS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "estimated_tokens")
MAX_RANGE_DAYS = 366


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False  # counted by Cadence, not reported by the provider

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage_add(**fields) -> None:
    """Add calls' usage to their day's row (usage_statement's fields): one call's by default;
    `requests` calls' summed."""
    sql, values = usage_statement(**fields)
    with bound_cursor() as cursor:  # prepared: one text
        cursor.execute(sql, values)


def usage_statement(
    *,
    org_id: int,
    principal: str,
    usage: Usage,
    api_key_id=None,
    orchestrator: str = "",
    model: str = "",
    requests: int = 1,
    day: date | None = None,
    estimated_tokens: int | None = None,
) -> tuple[str, list]:
    """The statement that adds calls' usage to their day's row, and its values: one call's by
    default; `requests` calls' summed (`estimated_tokens`: how many of their tokens Cadence
    counted; default: all of them when `usage.estimated`). usage_add sends it; a turn's write
    sends it with the run's (tenants/limits/turns.py)."""
    day = day or timezone.now().date()
    total = usage.total_tokens
    if estimated_tokens is None:
        estimated_tokens = total if usage.estimated else 0
    values = [
        org_id,
        day,
        principal[:64],
        api_key_id,
        orchestrator[:100],
        model[:200],
        requests,
        usage.prompt_tokens,
        usage.completion_tokens,
        total,
        estimated_tokens,
    ]
    return _USAGE_SQL, values


_USAGE_SQL = f"""
    INSERT INTO public.{UsageDay._meta.db_table} AS u (organization_id, day, principal,
        api_key_id, orchestrator, model, requests, prompt_tokens, completion_tokens,
        total_tokens, estimated_tokens, updated_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
    ON CONFLICT (organization_id, day, principal, orchestrator, model) DO UPDATE SET
        requests = u.requests + EXCLUDED.requests,
        prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens,
        total_tokens = u.total_tokens + EXCLUDED.total_tokens,
        estimated_tokens = u.estimated_tokens + EXCLUDED.estimated_tokens,
        api_key_id = COALESCE(EXCLUDED.api_key_id, u.api_key_id),
        updated_at = now()
"""


def _parse_day(value: str | None, field: str) -> date | None:
    if value in (None, ""):
        return None
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise ApplicationError(
        f"{field} must be a date (YYYY-MM-DD).", "invalid_date", {"field": field}
    )


@dataclass(frozen=True, slots=True)
class UsageQuery:
    start: date
    end: date  # inclusive
    group_by: tuple[str, ...]


def usage_query_parse(
    *, start: str | None, end: str | None, group_by: str | None, retention_days: int
) -> UsageQuery:
    """Validated range and grouping: 400s for bad dates, a range past retention, unknown groups."""
    today = timezone.now().date()
    end_day = _parse_day(end, "to") or today
    start_day = _parse_day(start, "from") or (end_day - timedelta(days=29))
    if start_day > end_day:
        raise ApplicationError(
            "from must not be after to.",
            "invalid_range",
            {"from": str(start_day), "to": str(end_day)},
        )
    oldest = today - timedelta(days=retention_days)
    if start_day < oldest:
        raise ApplicationError(
            f"from is past this organization's retention of {retention_days} days "
            f"(the oldest day kept is {oldest}).",
            "range_past_retention",
            {"field": "from", "oldest": str(oldest), "retention_days": retention_days},
        )
    if (end_day - start_day).days >= MAX_RANGE_DAYS:
        raise ApplicationError(
            f"A range covers at most {MAX_RANGE_DAYS} days.", "invalid_range", {"field": "to"}
        )
    groups = tuple(g.strip() for g in (group_by or "day").split(",") if g.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups or len(groups) > 3:
        raise ApplicationError(
            f"group_by takes up to three of {sorted(GROUPS)}.",
            "invalid_group_by",
            {"field": "group_by", "unknown": unknown},
        )
    return UsageQuery(start_day, end_day, tuple(dict.fromkeys(GROUPS[g] for g in groups)))


def usage_rows(*, org_id: int | None, query: UsageQuery) -> list[dict]:
    """Sums per group, ordered by the groups (org_id None: every organization, for operators)."""
    rows = UsageDay.objects.filter(day__gte=query.start, day__lte=query.end)
    if org_id is not None:
        rows = rows.filter(organization_id=org_id)
    result = []
    for row in (
        rows.values(*query.group_by)
        .annotate(**{m: Sum(m) for m in METRICS})
        .order_by(*query.group_by)
    ):
        item = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in row.items()}
        result.append(item)
    return result


def usage_totals(*, org_id: int | None, query: UsageQuery) -> dict[str, int]:
    rows = UsageDay.objects.filter(day__gte=query.start, day__lte=query.end)
    if org_id is not None:
        rows = rows.filter(organization_id=org_id)
    sums = rows.aggregate(**{m: Sum(m) for m in METRICS})
    return {m: int(sums[m] or 0) for m in METRICS}


def _csv_cell(value) -> str:
    text = "" if value is None else str(value)
    # A cell starting with = + - @ runs as a formula in a spreadsheet (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def usage_csv(*, rows: list[dict], query: UsageQuery) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    header = [*query.group_by, *METRICS]
    writer.writerow(header)
    for row in rows:
        writer.writerow([_csv_cell(row.get(name)) for name in header])
    return out.getvalue()


def usage_by_day(*, org_id: int | None, days: int = 30) -> list[dict]:
    """The last `days` days, every day present (zeros included): what the admin charts draw."""
    today = timezone.now().date()
    query = UsageQuery(today - timedelta(days=days - 1), today, ("day",))
    found = {row["day"]: row for row in usage_rows(org_id=org_id, query=query)}
    series = []
    for offset in range(days):
        day = (query.start + timedelta(days=offset)).isoformat()
        row = found.get(day, {})
        series.append({"day": day, **{m: int(row.get(m) or 0) for m in METRICS}})
    return series


def usage_top(*, org_id: int | None, dimension: str, days: int = 30, limit: int = 5) -> list[dict]:
    today = timezone.now().date()
    field = GROUPS[dimension] if dimension in GROUPS else dimension
    rows = UsageDay.objects.filter(day__gte=today - timedelta(days=days - 1))
    if org_id is not None:
        rows = rows.filter(organization_id=org_id)
    return list(
        rows.values(field)
        .annotate(total_tokens=Sum("total_tokens"), requests=Sum("requests"))
        .order_by("-total_tokens", field)[:limit]
    )
