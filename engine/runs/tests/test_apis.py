"""REST for runs: privacy, filters, cursor pages, bad input, steps, payloads and exports."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django_tenants.utils import schema_context

from engine.models import Run, RunEvent

BASE = "/api/v1/orgs/alpha/runs"
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _make_run(minute: int, **fields) -> Run:
    defaults = {
        "orchestrator_slug": "bot",
        "trigger": "invoke",
        "status": "succeeded",
        "duration_ms": 100.0,
    }
    with schema_context("org_alpha"):
        run = Run.objects.create(**{**defaults, **fields})
        Run.objects.filter(pk=run.pk).update(started_at=T0 + timedelta(minutes=minute))
        run.refresh_from_db()
    return run


@pytest.fixture
def runs(db, world):
    """Runs of alpha: two of the member user, one of the member's key, one of the admin, one of
    a key the member user created, each with a step."""
    from tenants.services import api_key_create

    member, admin = world.alpha.users["member"], world.alpha.users["admin"]
    own_key, own_secret = api_key_create(
        org=world.alpha.org,
        name="member's own key",
        role="member",
        creator_role="member",
        created_by=member,
    )
    made = {
        "user_ok": _make_run(1, owner_user_id=member.pk, orchestrator_slug="alpha-bot"),
        "user_failed": _make_run(
            2,
            owner_user_id=member.pk,
            status="failed",
            error="llm_timeout: slow",
            error_code="llm_timeout",
            duration_ms=5000.0,
            trigger="chat",
        ),
        "key": _make_run(3, owner_api_key_id=world.alpha.key_ids["member"]),
        "admin": _make_run(4, owner_user_id=admin.pk),
        "own_key": _make_run(5, owner_api_key_id=own_key.id, trigger="openai"),
    }
    with schema_context("org_alpha"):
        for index, run in enumerate(made.values()):
            RunEvent.objects.create(
                run=run, seq=1, kind="note", name=f"note_{index}", outcome="completed", at=T0
            )
    made["own_secret"] = own_secret
    return made


def _ids(response) -> set[str]:
    assert response.status_code == 200, response.json()
    return {r["id"] for r in response.json()["results"]}


def test_members_see_their_own_runs_admins_see_all(world, runs, as_user, as_key, api):
    ids = {name: str(run.id) for name, run in runs.items() if name != "own_secret"}
    mine = {ids["user_ok"], ids["user_failed"], ids["own_key"]}

    assert _ids(as_user(world.alpha.users["member"]).get(f"{BASE}/")) == mine
    api.logout()
    assert _ids(as_key(world.alpha.keys["member"]).get(f"{BASE}/")) == {ids["key"]}
    assert _ids(as_key(runs["own_secret"]).get(f"{BASE}/")) == {ids["own_key"]}
    assert _ids(as_key(world.alpha.keys["viewer"]).get(f"{BASE}/")) == set()
    assert _ids(as_key(world.alpha.keys["admin"]).get(f"{BASE}/")) >= set(ids.values())
    assert _ids(as_key(world.alpha.keys["owner"]).get(f"{BASE}/")) >= set(ids.values())


def test_another_members_run_is_404_everywhere(world, runs, as_key):
    client = as_key(world.alpha.keys["member"])
    other = runs["admin"].id
    for path in ("", "steps/", "steps/1/payload/", "export/"):
        response = client.get(f"{BASE}/{other}/{path}")
        assert (response.status_code, response.json()["error"]["code"]) == (404, "run_not_found")
    assert as_key(world.alpha.keys["admin"]).get(f"{BASE}/{other}/").status_code == 200


def test_outsiders_are_refused(world, runs, as_key, as_user, api):
    run = runs["user_ok"].id
    for path in (f"{BASE}/", f"{BASE}/{run}/", f"{BASE}/{run}/steps/", f"{BASE}/{run}/export/"):
        assert as_key(world.bravo.keys["owner"]).get(path).status_code == 404
        api.credentials()
        assert as_user(world.outsider).get(path).status_code == 404
        api.logout()
        assert as_user(world.bravo.users["owner"]).get(path).status_code == 404
        api.logout()
    # bravo's owner sees nothing of alpha through bravo's own path either
    assert _ids(as_key(world.bravo.keys["owner"]).get("/api/v1/orgs/bravo/runs/")) == set()
    assert api.post(f"{BASE}/", {}, format="json").status_code in (401, 403, 404, 405)


def test_filters(world, runs, as_key):
    client = as_key(world.alpha.keys["admin"])
    ids = {name: str(run.id) for name, run in runs.items() if name != "own_secret"}
    window = f"since={(T0).isoformat().replace('+00:00', 'Z')}&until=2026-06-01T12:10:00Z"

    def found(query: str) -> set[str]:
        return _ids(client.get(f"{BASE}/?{window}&{query}"))

    assert found("status=failed") == {ids["user_failed"]}
    assert found("trigger=openai") == {ids["own_key"]}
    assert found("orchestrator=alpha-bot") == {ids["user_ok"]}
    assert found("slower_than_ms=1000") == {ids["user_failed"]}
    assert found("error_code=llm_timeout") == {ids["user_failed"]}
    assert found("q=note_3") == {ids["admin"]}
    assert found("q=slow") == {ids["user_failed"]}
    assert _ids(client.get(f"{BASE}/?since=2026-06-01T12:03:30Z&until=2026-06-01T12:10:00Z")) == {
        ids["admin"],
        ids["own_key"],
    }


def test_cursor_pages_cover_every_run_once_newest_first(world, runs, as_key):
    client = as_key(world.alpha.keys["admin"])
    seen, cursor = [], None
    while True:
        query = "since=2026-06-01T00:00:00Z&until=2026-06-02T00:00:00Z&limit=2"
        body = client.get(f"{BASE}/?{query}" + (f"&cursor={cursor}" if cursor else "")).json()
        seen += [r["id"] for r in body["results"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    expected = [str(runs[n].id) for n in ("own_key", "admin", "key", "user_failed", "user_ok")]
    assert seen == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("colour=red", "colour"),
        ("status=exploded", "status"),
        ("trigger=carrier-pigeon", "trigger"),
        ("since=yesterday", "since"),
        ("until=2026-06-01T12:00:00", "until"),
        ("slower_than_ms=-5", "slower_than_ms"),
        ("slower_than_ms=fast", "slower_than_ms"),
        ("limit=0", "limit"),
        ("limit=1000", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("q=" + "x" * 201, "q"),
    ],
)
def test_bad_filters_are_400_naming_the_filter(world, runs, as_key, query, field):
    response = as_key(world.alpha.keys["admin"]).get(f"{BASE}/?{query}")

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert (error["code"], error["details"]["field"]) == ("invalid_filter", field)


def test_a_nul_byte_in_a_filter_is_400_naming_it(world, runs, as_key):
    # Refused before the view, by the site's request checks, in the one error shape.
    response = as_key(world.alpha.keys["admin"]).get(f"{BASE}/?q=a%00b")

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "query.q"


def test_unknown_runs_steps_and_formats(world, runs, as_key):
    client = as_key(world.alpha.keys["admin"])
    run = runs["user_ok"].id

    assert client.get(f"{BASE}/not-a-uuid/").json()["error"]["code"] == "run_not_found"
    missing = client.get(f"{BASE}/{run}/steps/99/payload/")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "step_not_found")
    assert client.get(f"{BASE}/{run}/steps/x/payload/").status_code == 404
    bad = client.get(f"{BASE}/{run}/export/?as=xml")
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_format")


@pytest.fixture
def real_run(world, chat_orchestrator, as_key):
    """A recorded invoke with a tool call and a step too large to keep inline."""
    content = '/tool calculator {"expression": "2+3"} ' + "y" * 20_000
    response = as_key(world.alpha.keys["member"]).post(
        f"/api/v1/orgs/alpha/orchestrators/{chat_orchestrator['fast'].id}/invoke/",
        {"messages": [{"role": "user", "content": content}]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    return response.json()["run"], content


def test_steps_payload_and_json_export_of_a_real_run(world, real_run, as_key):
    run_id, content = real_run
    client = as_key(world.alpha.keys["member"])

    detail = client.get(f"{BASE}/{run_id}/").json()
    assert (detail["status"], detail["trigger"], detail["input"]["message"]) == (
        "succeeded",
        "invoke",
        content,
    )
    steps = client.get(f"{BASE}/{run_id}/steps/").json()["results"]
    assert [(s["seq"], s["parent"], s["kind"], s["name"], s["status"]) for s in steps][:4] == [
        (1, None, "note", "prepare_prompt", "completed"),
        (2, None, "note", "agent", "completed"),
        (3, 2, "llm_call", "llm_call", "completed"),
        (4, 2, "tool_call", "calculator", "completed"),
    ]
    assert steps[0]["truncated"] is True and steps[0]["outputs"]["truncated"] is True
    payload = client.get(f"{BASE}/{run_id}/steps/1/payload/").json()
    assert payload["data"]["outputs"]["messages"][-1]["content"] == content
    exported = client.get(f"{BASE}/{run_id}/export/").json()
    assert exported["run"]["id"] == run_id
    assert exported["steps"][0]["outputs"]["messages"][-1]["content"] == content
    assert [s["seq"] for s in exported["steps"]] == [s["seq"] for s in steps]


def test_otlp_export_is_one_trace_following_the_genai_conventions(world, real_run, as_key):
    run_id, _ = real_run

    body = as_key(world.alpha.keys["member"]).get(f"{BASE}/{run_id}/export/?as=otlp").json()

    spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    by_id = {span["spanId"]: span for span in spans}
    root = spans[0]
    assert {span["traceId"] for span in spans} == {run_id.replace("-", "")}
    assert root["name"] == "invoke_agent chatbot" and "parentSpanId" not in root
    assert all(span["parentSpanId"] in by_id for span in spans[1:])
    chat = next(span for span in spans if span["name"] == "chat cadence-offline")
    attributes = {a["key"]: next(iter(a["value"].values())) for a in chat["attributes"]}
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "offline"
    assert int(attributes["gen_ai.usage.input_tokens"]) > 0
    assert by_id[chat["parentSpanId"]]["name"] == "agent"
    tool = next(span for span in spans if span["name"] == "execute_tool calculator")
    assert by_id[tool["parentSpanId"]]["name"] == "agent"
    for span in spans:
        assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"]) > 0
    json.dumps(body)  # plain JSON throughout


def test_the_tenant_admin_follows_the_same_rule(world, runs):
    from django.test import Client

    def client(user):
        made = Client()
        made.force_login(user)
        return made

    member, admin = client(world.alpha.users["member"]), client(world.alpha.users["admin"])
    mine, other = runs["user_ok"], runs["admin"]

    listing = member.get("/orgs/alpha/admin/engine/run/").content.decode()
    assert str(mine.pk) in listing or f"/engine/run/{mine.pk}/" in listing
    assert f"/engine/run/{other.pk}/" not in listing
    assert member.get(f"/orgs/alpha/admin/engine/run/{mine.pk}/change/").status_code == 200
    refused = member.get(f"/orgs/alpha/admin/engine/run/{other.pk}/change/")
    assert refused.status_code in (302, 404)
    assert f"/engine/run/{other.pk}/" in admin.get("/orgs/alpha/admin/engine/run/").content.decode()
