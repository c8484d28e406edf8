"""The run list's text search and deep pages: what each place `q` looks in finds, pages merge the
places newest first without repeats, ties on started_at page by id, and the indexes that keep it
fast at a million runs exist in every tenant schema and the template, and are the ones used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db import connection
from django_tenants.utils import schema_context

from engine.models import Run, RunEvent, RunLog

BASE = "/api/v1/orgs/alpha/runs"
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
WINDOW = "since=2026-05-01T00:00:00Z&until=2026-05-02T00:00:00Z"
TRIGRAM_INDEXES = {
    "run_error_trgm",
    "runevent_name_trgm",
    "runevent_error_trgm",
    "runlog_message_trgm",
}


def _run(minute: int, *, steps: list[dict], **fields) -> Run:
    with schema_context("org_alpha"):
        run = Run.objects.create(orchestrator_slug="bot", trigger="rest", **fields)
        Run.objects.filter(pk=run.pk).update(started_at=T0 + timedelta(minutes=minute))
        for seq, step in enumerate(steps, start=1):
            RunEvent.objects.create(
                run=run, seq=seq, kind="note", outcome="completed", at=T0, **step
            )
        run.refresh_from_db()
    return run


def _pages(client, query: str) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        response = client.get(f"{BASE}/?{WINDOW}&{query}" + (f"&cursor={cursor}" if cursor else ""))
        assert response.status_code == 200, response.json()
        body = response.json()
        pages.append([r["id"] for r in body["results"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


@pytest.fixture
def searchable(db, world):
    member = world.alpha.users["member"]
    return {
        # newest first: the run's own error, a step's name, a step's error; the last matches
        # in two places (the run and its failing step) and must come back once.
        "run_error": _run(4, error="Quota: Geocode credits spent", status="failed", steps=[]),
        "step_name": _run(3, steps=[{"name": "tool:geocode_address"}], owner_user_id=member.pk),
        "step_error": _run(2, steps=[{"name": "lookup", "error": "GeocodeError: no match"}]),
        "both": _run(
            1,
            error="GEOCODE failed",
            status="failed",
            steps=[{"name": "prepare"}, {"name": "call", "error": "geocode timeout"}],
        ),
        "other": _run(0, steps=[{"name": "translate"}]),
    }


def test_q_finds_each_place_once_newest_first_across_pages(world, searchable, as_key):
    client = as_key(world.alpha.keys["admin"])
    ids = {name: str(run.id) for name, run in searchable.items()}

    pages = _pages(client, "q=geocode&limit=2")

    assert pages == [[ids["run_error"], ids["step_name"]], [ids["step_error"], ids["both"]]]
    assert _pages(client, "q=geocode&status=failed") == [[ids["run_error"], ids["both"]]]
    assert _pages(client, "q=zebra") == [[]]


def test_q_keeps_to_the_runs_a_member_may_see(world, searchable, as_user):
    client = as_user(world.alpha.users["member"])

    assert _pages(client, "q=geocode") == [[str(searchable["step_name"].id)]]


@pytest.mark.parametrize("text", ["ge", "  a ", "%"])
def test_q_under_three_characters_is_400(world, searchable, as_key, text):
    response = as_key(world.alpha.keys["admin"]).get(f"{BASE}/", {"q": text})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["details"]["field"]) == ("invalid_filter", "q")
    assert "at least 3 characters" in error["message"]


def test_runs_started_at_the_same_instant_page_by_id(world, db, as_key):
    made = [_run(30, steps=[]) for _ in range(5)]
    expected = sorted((str(run.id) for run in made), key=lambda i: int(i.replace("-", ""), 16))

    pages = _pages(as_key(world.alpha.keys["admin"]), "since=2026-05-01T08:30:00Z&limit=2")

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [run_id for page in pages for run_id in page] == expected[::-1]


def _index_names(schema: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", [schema])
        return {row[0] for row in cursor.fetchall()}


def test_search_indexes_are_in_every_tenant_schema_and_the_template(world, db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'pg_trgm'"
        )
        # In public, never in a tenant schema (dropping that schema would take it away).
        assert cursor.fetchone() == ("public",)
    wanted = TRIGRAM_INDEXES | {"run_slug_recent", "run_duration", "runevent_name_run"}
    for schema in ("org_alpha", "org_bravo", settings.CADENCE_TEMPLATE_SCHEMA):
        assert wanted <= _index_names(schema), schema
        with connection.cursor() as cursor:
            # durations' long tail needs a finer histogram than the default 100 buckets
            cursor.execute(
                "SELECT attstattarget FROM pg_attribute WHERE attname = 'duration_ms' "
                "AND attrelid = (quote_ident(%s) || '.engine_run')::regclass",
                [schema],
            )
            assert cursor.fetchone() == (1000,), schema
            cursor.execute(
                "SELECT reloptions FROM pg_class WHERE oid = (quote_ident(%s) || '.engine_run')::regclass",
                [schema],
            )
            assert cursor.fetchone() == (["parallel_workers=0"],), schema


@pytest.mark.parametrize(
    ("queryset", "index"),
    [
        (lambda: RunEvent.objects.filter(name__icontains="geocode"), "runevent_name_trgm"),
        (
            lambda: RunEvent.objects.filter(error__icontains="geocode"),
            "runevent_error_trgm",
        ),
        (
            lambda: Run.objects.filter(error__icontains="geocode"),
            "run_error_trgm",
        ),
        (
            lambda: RunLog.objects.filter(message__icontains="geocode"),
            "runlog_message_trgm",
        ),
    ],
)
def test_the_search_conditions_match_the_trigram_indexes(world, db, queryset, index):
    # The indexes are on UPPER(column), as Django's icontains compares: a mismatch would leave
    # them unused and the search reading whole tables.
    with schema_context("org_alpha"), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = queryset().order_by().explain()
    assert index in plan, plan


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, 1),
        ({"q": "geocode"}, 1),
        ({"q": "geocode", "status": "failed"}, 1),
        # Nothing found: rare and absent, or frequent? One count says (then the frequent walk).
        ({"q": "zebra"}, 2),
    ],
)
def test_a_page_is_one_query_with_text_or_without(world, searchable, query, expected):
    """With `q` as without: one statement, which gathers the matching run ids and pages among
    them on the server (engine/runs/search.py: the ids sent back as an array constant cost ~5
    ms of server CPU to parse and plan at 3,000 ids); never a query per run (the serializer
    reads no deferred field)."""
    from django.test.utils import CaptureQueriesContext

    from engine.runs import export, selectors

    with schema_context("org_alpha"), CaptureQueriesContext(connection) as queries:
        runs, _ = selectors.run_list(
            principal=world.alpha.users["admin"],
            role="admin",
            params={"since": "2026-05-01T00:00:00Z", "limit": "2", **query},
            org=world.alpha.org,
        )
        page = [export.run_output(run) for run in runs]
    statements = [q["sql"] for q in queries.captured_queries if "search_path" not in q["sql"]]
    assert len(page) == (0 if query.get("q") == "zebra" else 2)
    assert len(statements) == expected, statements


@pytest.mark.parametrize("role", ["admin", "member"])
def test_q_looks_each_matching_run_up_whatever_the_filters(world, searchable, role):
    """Rare text with a status filter, where that status is common: the matching runs are
    looked up by primary key and filtered, never found by intersecting with (or walking) the
    status or owner indexes, which at a million runs read 100,000 failed runs for 300 matching
    ones (benchmarks/run_list.py)."""
    from engine.runs import selectors

    member = world.alpha.users["member"]
    with schema_context("org_alpha"), connection.cursor() as cursor:
        Run.objects.bulk_create(
            Run(orchestrator_slug="bot", trigger="rest", status="failed", owner_user_id=member.pk)
            for _ in range(3000)
        )
        cursor.execute("ANALYZE engine_run")
        runs = selectors.runs_visible(
            principal=world.alpha.users[role], role=role, org=world.alpha.org
        )
        plan = (
            runs.filter(status="failed")
            .filter(selectors.search.among_matches("geocode"))
            .order_by("-started_at", "-id")[:51]
            .explain()
        )
    # The page's own scan: what follows the gathering of the ids (an InitPlan), under the Sort.
    page_scan = plan.rsplit("->  Sort", 1)[-1].split("InitPlan")[0]
    assert "Index Cond: (id = ANY ($" in page_scan, plan
    assert "engine_run_pkey" in page_scan, plan
    for index in ("run_status_recent", "run_user_recent", "run_key_recent", "run_recent"):
        assert index not in page_scan, plan


# --- the two ways of `q` (engine/runs/search.py) ------------------------------------------


@pytest.fixture(params=["ids", "frequent", "many names"])
def search_way(request, monkeypatch):
    """Each way `q` can take must give the same pages: the matching ids (the default here),
    the walk over the newest runs (more matches than MAX_MATCHES), and step names through the
    trigram index (more distinct names than MAX_NAMES)."""
    from engine.runs import search

    if request.param == "frequent":
        monkeypatch.setattr(search, "MAX_MATCHES", 1)
    if request.param == "many names":
        monkeypatch.setattr(search, "MAX_NAMES", 1)
    return request.param


@pytest.fixture
def many(db, world):
    """Twelve runs, nine carrying `geocode` somewhere (three started at the same instant), so
    that pages of two cross every kind of boundary; names in mixed case, one with LIKE's
    wildcards in it."""
    member = world.alpha.users["member"]
    made = []
    for minute, steps, fields in [
        (50, [{"name": "tool:GeoCode_address"}], {}),
        (49, [{"name": "translate"}], {}),
        (48, [{"name": "prepare"}, {"name": "call", "error": "geocode: 502"}], {}),
        (47, [], {"error": "Quota: geocode credits", "status": "failed"}),
        (46, [{"name": "tool:geocode_address"}], {"owner_user_id": member.pk}),
        (46, [{"name": "tool:geocode_address"}], {}),
        (46, [{"name": "x geocode 100%_done"}], {"owner_user_id": member.pk}),
        (45, [{"name": "rerank"}], {"owner_user_id": member.pk}),
        (44, [{"name": "tool:geocode_address"}, {"name": "geocode again"}], {}),
        (43, [{"name": "tool:geocode_address"}], {"status": "failed", "error": "boom"}),
        (42, [{"name": "finalize"}], {}),
        (41, [{"name": "Tool:GEOCODE_ADDRESS"}], {"owner_user_id": member.pk}),
    ]:
        made.append(_run(minute, steps=steps, **fields))
    return made


def _newest_first(runs: list[Run]) -> list[str]:
    ordered = sorted(runs, key=lambda r: (r.started_at, r.id.int), reverse=True)
    return [str(r.id) for r in ordered]


def _carrying(runs: list[Run], text: str) -> list[Run]:
    with schema_context("org_alpha"):
        return [
            r
            for r in runs
            if text.upper() in r.error.upper()
            or any(text.upper() in (e.name + "\n" + e.error).upper() for e in r.events.all())
        ]


@pytest.mark.parametrize("limit", [1, 2, 4, 50])
def test_q_pages_every_matching_run_once_newest_first_each_way(
    world, many, as_key, search_way, limit
):
    client = as_key(world.alpha.keys["admin"])
    expected = _newest_first(_carrying(many, "geocode"))
    assert len(expected) == 9

    pages = _pages(client, f"q=geocode&limit={limit}")

    assert [run_id for page in pages for run_id in page] == expected
    assert all(len(page) == limit for page in pages[:-1])


def test_q_with_filters_and_the_privacy_rule_each_way(world, many, as_key, as_user, search_way):
    admin = as_key(world.alpha.keys["admin"])
    failed = [r for r in _carrying(many, "geocode") if r.status == "failed"]
    assert _pages(admin, "q=geocode&status=failed&limit=1") == [
        [run_id] for run_id in _newest_first(failed)
    ]
    admin.credentials()

    member = world.alpha.users["member"]
    theirs = [r for r in _carrying(many, "geocode") if r.owner_user_id == member.pk]
    pages = _pages(as_user(member), "q=geocode&limit=2")
    assert [run_id for page in pages for run_id in page] == _newest_first(theirs)
    assert len(theirs) == 3


def test_q_with_status_keeps_to_a_members_runs_and_keys_each_way(world, many, as_user, search_way):
    """A member's page of text and status: their own runs and their keys' runs that carry the
    text and have the status, never another's, nor their own in a team they do not see."""
    from tenants.models import ApiKey
    from tenants.services import api_key_create
    from tenants.teams.models import Team

    member, admin = world.alpha.users["member"], world.alpha.users["admin"]
    key, _ = api_key_create(
        org=world.alpha.org,
        name="member's geocode key",
        role="member",
        creator_role="member",
        created_by=member,
    )
    with schema_context("org_alpha"):
        hidden_team = Team.objects.create(slug="geo-hidden", name="Geo hidden")
    failed = {"status": "failed", "error": "boom"}
    geocode = [{"name": "tool:geocode_address"}]
    mine = [
        _run(40, steps=geocode, owner_user_id=member.pk, **failed),
        _run(
            39, steps=[{"name": "call", "error": "Geocode: 502"}], owner_api_key_id=key.pk, **failed
        ),
        _run(38, steps=[], owner_user_id=member.pk, status="failed", error="geocode quota"),
    ]
    others = [
        _run(37, steps=geocode, owner_user_id=admin.pk, **failed),
        # the member key of the world was made by the owner: not the member's
        _run(36, steps=geocode, owner_api_key_id=world.alpha.key_ids["member"], **failed),
    ]
    _run(35, steps=geocode, owner_user_id=member.pk)  # theirs, not failed
    _run(34, steps=[{"name": "rerank"}], owner_user_id=member.pk, **failed)  # theirs, no text
    hidden = _run(33, steps=geocode, owner_user_id=member.pk, **failed)
    with schema_context("org_alpha"):
        Run.objects.filter(pk=hidden.pk).update(team=hidden_team)
    try:
        client = as_user(member)

        for limit in (1, 2, 50):
            pages = _pages(client, f"q=geocode&status=failed&limit={limit}")
            assert [run_id for page in pages for run_id in page] == _newest_first(mine)
        unseen = {str(run.id) for run in [*others, hidden]}
        assert unseen.isdisjoint(_pages(client, "q=geocode&limit=50")[0])
    finally:
        ApiKey.objects.filter(pk=key.pk).delete()


@pytest.mark.parametrize("text", ["100%_", "0%_d", "e_a"])
def test_q_takes_like_wildcards_literally_each_way(world, many, as_key, search_way, text):
    found = _pages(as_key(world.alpha.keys["admin"]), f"q={text}".replace("%", "%25"))

    assert found == [_newest_first(_carrying(many, text))]


def test_q_lists_step_names_through_their_index(world, many):
    """With few distinct names, the steps of the names that contain the text are read from
    the (name, run_id) index alone: never from the table or the trigram index."""
    from engine.runs import search

    with schema_context("org_alpha"), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN " + search._COUNT,
            {"pattern": "%GEOCODE%", "cap": search.MAX_MATCHES, "max_names": search.MAX_NAMES},
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Only Scan using runevent_name_run" in plan, plan
