"""Reading runs (in the tenant's schema): who may see which, the filtered list, a run's steps.

Privacy follows what the run ran: admins and owners see every run of the organization (a
team-limited key: of its team and the organization at large); members and viewers see, among the
runs of the teams they see (tenants/teams/scoping.py), the runs they started, those of their own conversations (a run of a
conversation carries the conversation's owner) and those of the API keys they created; a key
sees its own runs. One rule, used by REST, the admin and sockets.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any

from django.core.files.storage import default_storage
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.db.models.fields.tuple_lookups import Tuple, TupleLessThan
from django.utils.dateparse import parse_datetime

from cadence_site.errors import ApplicationError, NotFoundError
from engine.lineage import SCORE_KINDS, Lineage, LineageError
from engine.models import Run, RunEvent, RunLog
from engine.runs import search
from tenants.roles import Role, role_at_least

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_TEXT = 200
LIST_DEFERRED = ("input", "output", "environment")
MIN_TEXT = 3  # a trigram: shorter text could not use the search indexes
FILTERS = (
    "status",
    "orchestrator",
    "trigger",
    "since",
    "until",
    "slower_than_ms",
    "error_code",
    "q",
    "cursor",
    "limit",
)


def run_owner_q(*, principal, role: str | None, org=None) -> Q | None:
    """The runs (or any rows with `owner_user_id` / `owner_api_key_id`, as purged runs) a caller
    may read: None for every row (admins and owners), else the rows they own."""
    if role_at_least(role, Role.ADMIN):
        return None
    key = getattr(principal, "api_key", None)
    if key is not None:
        return Q(owner_api_key_id=key.pk)
    if getattr(principal, "pk", None) is None:
        return Q(pk__in=[])
    from django.db import connection

    from tenants.models import ApiKey

    org = org if org is not None else connection.tenant
    # A user's keys are the keys they created in this organization. Keys live in the public
    # schema only: the tenant's search path would find its own (empty) table first, so the table
    # is named with its schema. Not through schema_context("public"): switching there and back
    # cost two more round trips on every member's list page (benchmarks/run_list.py).
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT id FROM public."{ApiKey._meta.db_table}"'  # noqa: S608 - fixed names
            " WHERE organization_id = %s AND created_by_id = %s",
            [getattr(org, "id", None), principal.pk],
        )
        keys = [row[0] for row in cursor.fetchall()]
    return Q(owner_user_id=principal.pk) | Q(owner_api_key_id__in=keys)


def runs_visible(*, principal, role: str | None, org=None) -> QuerySet[Run]:
    from tenants.teams.scoping import scoped, team_scope

    # The team rule first (tenants/teams/scoping.py): a run of a team the caller does not see,
    # or no longer sees, is invisible whoever started it; then the owner rule.
    runs = scoped(Run.objects.all(), team_scope(principal, role), shared_field="orchestrator_id")
    owned = run_owner_q(principal=principal, role=role, org=org)
    return runs if owned is None else runs.filter(owned)


def run_get_for_user(*, principal, role: str | None, run_id, org=None) -> Run:
    """Another member's run is the same 404 as a run that does not exist."""
    run = (
        runs_visible(principal=principal, role=role, org=org)
        .filter(pk=_uuid(run_id, "run"))
        .first()
        if run_id
        else None
    )
    if run is None:
        raise NotFoundError("No such run.", "run_not_found")
    return run


def _bad(message: str, field: str, **details: Any) -> ApplicationError:
    return ApplicationError(message, "invalid_filter", {"field": field, **details})


def _uuid(value: Any, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFoundError(f"No such {field}.", f"{field}_not_found") from None


def _when(value: str, field: str) -> datetime:
    parsed = parse_datetime(value) if len(value) <= 64 else None
    if parsed is None or parsed.tzinfo is None:
        raise _bad(
            f"{field} must be an ISO 8601 time with a zone, e.g. 2026-01-31T12:00:00Z.", field
        )
    return parsed


def encode_cursor(run: Run) -> str:
    raw = json.dumps([run.started_at.isoformat(), str(run.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(value: str) -> tuple[datetime, uuid.UUID]:
    try:
        started, run_id = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        return _when(started, "cursor"), uuid.UUID(run_id)
    except (ValueError, TypeError, binascii.Error, ApplicationError):
        raise _bad("cursor is not one this API gave out.", "cursor") from None


def _text_where(text: str) -> list[Q | Exists]:
    """Where `q` looks, one condition per source: the run's error, its steps' names and errors,
    its log lines.
    Each source is one EXISTS on an indexed table (engine/migrations/0006: trigram indexes on
    UPPER(column), as Django's icontains compares); a new source, such as run log lines, is one
    more entry."""
    steps = RunEvent.objects.filter(run=OuterRef("pk")).filter(
        Q(name__icontains=text) | Q(error__icontains=text)
    )
    lines = RunLog.objects.filter(run=OuterRef("pk"), message__icontains=text)
    return [Q(error__icontains=text), Exists(steps), Exists(lines)]


def _text_page(runs: QuerySet[Run], text: str, *, limit: int) -> list[Run]:
    """Up to `limit + 1` of `runs` carrying `text`, newest first (engine/runs/search.py explains
    the two ways)."""
    newest = ("-started_at", "-id")
    # Rare text: one statement gathers the matching ids and looks each up.
    page = list(runs.filter(search.among_matches(text)).order_by(*newest)[: limit + 1])
    if page or not search.is_frequent(text):
        return page
    # Frequent text: one query per place the text can be in, each walking the newest runs and
    # probing each (an OR across them would force one plan for all); the branches' pages are
    # merged by UNION, newest first.
    branches = [runs.filter(where).order_by(*newest)[: limit + 1] for where in _text_where(text)]
    return list(branches[0].union(*branches[1:]).order_by(*newest)[: limit + 1])


def run_list(
    *, principal, role: str | None, params: dict[str, str], org=None
) -> tuple[list[Run], str | None]:
    """One page of the runs the caller may see, newest first, and the cursor of the next page.
    Every filter is checked: an unknown one, or a bad value, is a 400 naming it."""
    unknown = sorted(set(params) - set(FILTERS))
    if unknown:
        raise _bad(
            f"Unknown filter {unknown[0]!r}; the filters are {', '.join(FILTERS)}.",
            unknown[0],
            allowed=list(FILTERS),
        )
    for name, value in params.items():
        if len(value) > MAX_TEXT or "\x00" in value:
            raise _bad(f"{name} must be at most {MAX_TEXT} characters, without NUL.", name)
    # The list shows neither input nor output nor environment (the detail does): not read, not
    # de-TOASTed, for 50 runs a page.
    runs = runs_visible(principal=principal, role=role, org=org).defer(*LIST_DEFERRED)
    if "status" in params:
        if params["status"] not in Run.Status.values:
            raise _bad(f"status must be one of {', '.join(Run.Status.values)}.", "status")
        runs = runs.filter(status=params["status"])
    if "trigger" in params:
        if params["trigger"] not in Run.Trigger.values:
            raise _bad(f"trigger must be one of {', '.join(Run.Trigger.values)}.", "trigger")
        runs = runs.filter(trigger=params["trigger"])
    if "orchestrator" in params:
        ref = params["orchestrator"]
        try:
            runs = runs.filter(orchestrator_id=uuid.UUID(ref))
        except ValueError:
            runs = runs.filter(orchestrator_slug=ref)
    if "since" in params:
        runs = runs.filter(started_at__gte=_when(params["since"], "since"))
    if "until" in params:
        runs = runs.filter(started_at__lt=_when(params["until"], "until"))
    if "slower_than_ms" in params:
        try:
            slower = float(params["slower_than_ms"])
        except ValueError:
            slower = -1
        if not 0 <= slower < 10**9:
            raise _bad("slower_than_ms must be a number of milliseconds ≥ 0.", "slower_than_ms")
        runs = runs.filter(duration_ms__gt=slower)
    if "error_code" in params:
        runs = runs.filter(error_code=params["error_code"])
    text = params.get("q", "")
    if text and len(text.strip()) < MIN_TEXT:
        raise _bad(f"q must be at least {MIN_TEXT} characters (text is searched by trigrams).", "q")
    try:
        limit = int(params.get("limit", PAGE_SIZE))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise _bad(f"limit must be an integer from 1 to {MAX_PAGE_SIZE}.", "limit")
    if params.get("cursor"):
        started, after = _decode_cursor(params["cursor"])
        # A row comparison, not `a < x OR (a = x AND b < y)`: PostgreSQL starts the index scan
        # at the cursor instead of reading every newer run to skip it.
        runs = runs.filter(TupleLessThan(Tuple(F("started_at"), F("id")), (started, after)))
    if text:
        page = _text_page(runs, text, limit=limit)
    else:
        page = list(runs.order_by("-started_at", "-id")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return page, encode_cursor(page[-1]) if more else None


def run_steps(*, run: Run) -> list[RunEvent]:
    return list(run.events.order_by("seq"))


def step_get(*, run: Run, seq: Any) -> RunEvent:
    try:
        number = int(seq)
    except (TypeError, ValueError):
        number = -1
    step = run.events.filter(seq=number).first() if number >= 0 else None
    if step is None:
        raise NotFoundError(f"The run has no step {seq}.", "step_not_found")
    return step


def step_payload(*, step: RunEvent) -> dict[str, Any]:
    """The step's whole data: from file storage when the row holds a truncated copy."""
    if not step.payload:
        return step.data
    with default_storage.open(step.payload) as stored:
        return json.loads(stored.read())


# --- lineage ------------------------------------------------------------------------------

LINEAGE_PARAMS = ("step", "field")


def _lineage_record(step: RunEvent) -> dict[str, Any]:
    data = step.data if isinstance(step.data, dict) else {}
    if step.payload and step.kind in SCORE_KINDS:
        data = step_payload(step=step)  # the row's copy may be truncated: lineage needs values
    return {
        "seq": step.seq,
        "parent": step.parent_seq,
        "name": step.name,
        "kind": step.kind,
        "status": step.outcome,
        "inputs": data.get("inputs"),
        "outputs": data.get("outputs"),
        "reads": data.get("reads"),
        "forked": bool(data.get("forked")),
    }


def run_lineage(*, run: Run, params: dict[str, str]) -> dict[str, Any]:
    """The run's graph of steps and the fields that connect them (no parameters), or the chain
    of one value (`step` and `field`) back to the run's input (engine/lineage.py)."""
    unknown = sorted(set(params) - set(LINEAGE_PARAMS))
    if unknown:
        raise _lineage_bad(
            f"Unknown parameter {unknown[0]!r}; lineage takes step and field.", unknown[0]
        )
    if params and set(params) != set(LINEAGE_PARAMS):
        missing = "field" if "step" in params else "step"
        raise _lineage_bad(f"step and field go together: {missing} is missing.", missing)
    lineage = Lineage([_lineage_record(s) for s in run_steps(run=run)], run_input=run.input)
    if not params:
        return {"run": str(run.id), **lineage.graph()}
    raw_step, field = params["step"], params["field"]
    if not raw_step.isdigit() or len(raw_step) > 9:
        raise _lineage_bad("step must be a step's seq, a positive integer.", "step")
    if not field or len(field) > MAX_TEXT:
        raise _lineage_bad(
            f"field must be a score field's name (1-{MAX_TEXT} characters).", "field"
        )
    seq = int(raw_step)
    try:
        chain = lineage.chain(seq, field)
    except LineageError as exc:
        code = "unknown_step" if exc.field == "step" else "unknown_field"
        raise ApplicationError(str(exc), code, {"field": exc.field}) from None
    return {"run": str(run.id), "step": seq, "field": field, "chain": chain}


def _lineage_bad(message: str, field: str) -> ApplicationError:
    return ApplicationError(message, "invalid_parameter", {"field": field})


LOG_FILTERS = ("level", "step", "cursor", "limit")
LOG_PAGE_SIZE = 200
LOG_MAX_PAGE_SIZE = 1000


def run_logs(*, run: Run, params: dict[str, str]) -> tuple[list[RunLog], str | None]:
    """One page of a run's log lines in order, and the cursor of the next page. `level` keeps
    that level and above; `step` one step's lines; `cursor` continues after a page."""
    unknown = sorted(set(params) - set(LOG_FILTERS))
    if unknown:
        raise _bad(
            f"Unknown filter {unknown[0]!r}; the filters are {', '.join(LOG_FILTERS)}.",
            unknown[0],
            allowed=list(LOG_FILTERS),
        )
    for name, value in params.items():
        if len(value) > MAX_TEXT or "\x00" in value:
            raise _bad(f"{name} must be at most {MAX_TEXT} characters, without NUL.", name)
    lines = RunLog.objects.filter(run=run)
    if "level" in params:
        levels = list(RunLog.Level.values)
        if params["level"] not in levels:
            raise _bad(f"level must be one of {', '.join(levels)}.", "level")
        lines = lines.filter(level__in=levels[levels.index(params["level"]) :])
    numbers = {}
    for name, low, high in (("step", 0, 2**31 - 1), ("cursor", 0, 2**31 - 1)):
        if name in params:
            value = params[name]
            if not value.isdigit() or not low <= int(value) <= high:
                raise _bad(f"{name} must be an integer ≥ {low}.", name)
            numbers[name] = int(value)
    if "step" in numbers:
        lines = lines.filter(step_seq=numbers["step"])
    if "cursor" in numbers:
        lines = lines.filter(cursor__gt=numbers["cursor"])
    limit_text = params.get("limit", str(LOG_PAGE_SIZE))
    limit = int(limit_text) if limit_text.isdigit() else 0
    if not 1 <= limit <= LOG_MAX_PAGE_SIZE:
        raise _bad(f"limit must be an integer from 1 to {LOG_MAX_PAGE_SIZE}.", "limit")
    page = list(lines.order_by("cursor")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return page, str(page[-1].cursor) if more else None
