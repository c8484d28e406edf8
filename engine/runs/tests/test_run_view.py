"""The run view in the organization's admin: who may open it (Django's test client), and the page
itself in headless Chromium against a live server: the diagram drawn and coloured by status, the
step table, a step's inputs, outputs, diff and error, live updates, and the optional panels
(lineage, logs, replay) shown exactly when this server has their endpoints.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context

from cadence_site.testing import (
    CHROMIUM_ARGS,
    browser_skip_reason,
    find_chromium,
    start_live_server,
    test_database_url,
)

BROWSER_SKIP = browser_skip_reason()
if not BROWSER_SKIP:
    from playwright.sync_api import expect, sync_playwright
needs_browser = pytest.mark.skipif(bool(BROWSER_SKIP), reason=BROWSER_SKIP)

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "var" / "test-artifacts" / "runs"
PAGES = "/orgs/alpha/admin/engine/run"


def _view(run) -> str:
    return f"{PAGES}/{run.pk}/view/"


@pytest.fixture
def view_runs(world, committed_db):
    """In alpha: a finished run of the member (four nested steps, one failed), a run of the admin
    and a running run of the admin (committed: the live server reads them)."""
    from engine.models import Run, RunEvent

    def cleanup():
        with schema_context("org_alpha"):
            Run.objects.filter(orchestrator_slug__startswith="viewbot").delete()

    cleanup()
    now = timezone.now() - timedelta(seconds=5)
    member, admin = world.alpha.users["member"], world.alpha.users["admin"]
    with schema_context("org_alpha"):
        mine = Run.objects.create(
            orchestrator_slug="viewbot",
            trigger=Run.Trigger.REST,
            status=Run.Status.FAILED,
            input={"message": "What is 6*7?"},
            output="",
            error="step_failed: finish broke",
            error_code="step_failed",
            finished_at=now + timedelta(milliseconds=400),
            duration_ms=400.0,
            owner_user_id=member.pk,
        )
        steps = [
            # seq, parent, kind, name, outcome, offset ms, duration ms, data, error
            (1, None, "note", "agent", "completed", 0, 300, {"inputs": {"question": "6*7"}}, {}),
            (
                2,
                1,
                "llm_call",
                "llm_call",
                "completed",
                10,
                120,
                {
                    "inputs": {"messages": [{"role": "user", "content": "6*7"}]},
                    "outputs": {"content": "", "finish_reason": "tool_calls"},
                    "llm": {"provider": "offline", "model": "m", "tokens_in": 3, "tokens_out": 1},
                },
                {},
            ),
            (
                3,
                1,
                "tool_call",
                "calculator",
                "completed",
                140,
                30,
                {
                    "inputs": {"expression": "6*7", "answer": None},
                    "outputs": {"answer": 42},
                },
                {},
            ),
            (
                4,
                None,
                "note",
                "finish",
                "failed",
                310,
                50,
                {"inputs": {"answer": 42}, "outputs": {}},
                {
                    "error": "finish broke",
                    "error_type": "ValueError",
                    "stack": 'Traceback (most recent call last):\n  File "flow.py", line 9',
                    "cpu_ms": 1.5,
                    "memory_kb": 12,
                },
            ),
        ]
        for seq, parent, kind, name, outcome, offset, duration, data, extra in steps:
            RunEvent.objects.create(
                run=mine,
                seq=seq,
                parent_seq=parent,
                kind=kind,
                name=name,
                outcome=outcome,
                started_at=now + timedelta(milliseconds=offset),
                duration_ms=duration,
                at=now + timedelta(milliseconds=offset + duration),
                data=data,
                **extra,
            )
        theirs = Run.objects.create(
            orchestrator_slug="viewbot-admin",
            trigger=Run.Trigger.REST,
            status=Run.Status.SUCCEEDED,
            finished_at=now,
            duration_ms=1.0,
            owner_user_id=admin.pk,
        )
        running = Run.objects.create(
            orchestrator_slug="viewbot-live",
            trigger=Run.Trigger.REST,
            status=Run.Status.RUNNING,
            owner_user_id=admin.pk,
        )
        RunEvent.objects.create(
            run=running,
            seq=1,
            kind="note",
            name="first",
            outcome="completed",
            started_at=now,
            duration_ms=5.0,
            at=now,
        )
    yield {"mine": mine, "theirs": theirs, "running": running}
    cleanup()


def _client(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def _config(response) -> dict:
    return json.loads(
        re.search(rb'id="run-config" type="application/json">(.*?)</script>', response.content)[1]
    )


# --- access, without a browser ----------------------------------------------------------------


def test_member_opens_their_own_run_and_not_another(world, view_runs):
    client = _client(world.alpha.users["member"])

    own = client.get(_view(view_runs["mine"]))
    other = client.get(_view(view_runs["theirs"]))

    assert own.status_code == 200
    run_id = str(view_runs["mine"].pk)
    assert _config(own) == {
        "org": "alpha",
        "run": run_id,
        "api": f"/api/v1/orgs/alpha/runs/{run_id}/",
        "ws": f"/ws/orgs/alpha/runs/{run_id}/",
        "page": "/orgs/alpha/admin/engine/run/",
        "canReplay": False,
    }
    assert "csrftoken" in own.cookies
    assert other.status_code == 404


def test_admins_and_owners_may_replay(world, view_runs):
    for role in ("admin", "owner"):
        response = _client(world.alpha.users[role]).get(_view(view_runs["mine"]))
        assert response.status_code == 200
        assert _config(response)["canReplay"] is True


def test_outsiders_lower_roles_and_bad_ids_are_refused(world, view_runs):
    path = _view(view_runs["mine"])
    assert _client(world.alpha.users["viewer"]).get(path).status_code == 404
    assert _client(world.bravo.users["owner"]).get(path).status_code == 404
    assert _client(world.outsider).get(path).status_code == 404
    anonymous = _client().get(path)
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    admin = _client(world.alpha.users["admin"])
    assert admin.get(f"{PAGES}/not-a-uuid/view/").status_code == 404
    assert admin.get(f"{PAGES}/00000000-0000-0000-0000-000000000000/view/").status_code == 404
    assert admin.get(f"{PAGES}/{view_runs['mine'].pk}%00/view/").status_code in (400, 404)
    # bravo's own admin does not find alpha's run either
    bravo = _client(world.bravo.users["owner"])
    assert (
        bravo.get(f"/orgs/bravo/admin/engine/run/{view_runs['mine'].pk}/view/").status_code == 404
    )


def test_the_run_list_and_record_link_the_view(world, view_runs):
    client = _client(world.alpha.users["admin"])
    listing = client.get(f"{PAGES}/")
    record = client.get(f"{PAGES}/{view_runs['mine'].pk}/change/")

    assert _view(view_runs["mine"]).encode() in listing.content
    assert _view(view_runs["mine"]).encode() in record.content


# --- in Chromium --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_server_url(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        server = start_live_server(test_database_url())
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def browser_page(live_server_url):
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def login(username: str, password: str):
        page.goto(f"{live_server_url}/accounts/login/?next=/")
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        page.click("input[type=submit]")
        page.wait_for_url(f"{live_server_url}/")
        return page

    try:
        yield login, errors
    finally:
        browser.close()
        playwright.stop()


@needs_browser
def test_member_sees_the_diagram_steps_and_a_steps_detail(
    world, view_runs, live_server_url, browser_page
):
    login, errors = browser_page
    page = login("alpha-member", "pw-member")

    response = page.goto(live_server_url + _view(view_runs["mine"]))
    assert response.status == 200

    diagram = page.locator("#run-diagram[data-drawn='1'] svg")
    diagram.wait_for()
    # Coloured by status: mermaid gives each step's node its status class.
    expect(page.locator("#run-diagram g.node.completed")).to_have_count(3)
    expect(page.locator("#run-diagram g.node.failed")).to_have_count(1)
    rows = page.locator("#step-table tbody tr")
    expect(rows).to_have_count(4)
    assert [rows.nth(i).locator("td").nth(4).inner_text() for i in range(4)] == [
        "completed",
        "completed",
        "completed",
        "failed",
    ]
    assert rows.nth(2).locator("td").nth(3).inner_text() == "calculator"
    expect(page.locator("#run-timeline .timeline-bar")).to_have_count(4)
    expect(page.locator("#run-timeline .timeline-bar.failed")).to_have_count(1)
    expect(page.locator("#live-state")).to_have_text("finished")
    expect(page.locator("#run-error")).to_have_text("step_failed: finish broke")

    rows.nth(2).click()
    expect(page.locator("#step-title")).to_contain_text("calculator")
    assert json.loads(page.locator("#step-inputs").inner_text()) == {
        "expression": "6*7",
        "answer": None,
    }
    assert json.loads(page.locator("#step-outputs").inner_text()) == {"answer": 42}
    diff = page.locator("#step-diff tbody tr")
    expect(diff).to_have_count(1)
    assert diff.first.inner_text().split("\t") == ["answer", "null", "42"]
    expect(page.locator("#step-error-block")).to_be_hidden()

    rows.nth(3).click()
    expect(page.locator("#step-error")).to_have_text("ValueError: finish broke")
    expect(page.locator("#step-stack")).to_contain_text("Traceback (most recent call last)")
    expect(page.locator("#step-resources")).to_have_text(
        "wall 50.0 ms · CPU 1.5 ms · memory +12 KiB"
    )

    # A member never gets the replay button.
    expect(page.locator("#step-actions")).to_be_hidden()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "run-view-member.png"), full_page=True)
    assert errors == []

    # Another member's run: the same 404 as a run that does not exist.
    assert page.goto(live_server_url + _view(view_runs["theirs"])).status == 404


@needs_browser
def test_the_step_table_follows_a_running_run(world, view_runs, live_server_url, browser_page):
    from engine.models import Run, RunEvent

    login, errors = browser_page
    page = login("alpha-admin", "pw-admin")
    running = view_runs["running"]

    page.goto(live_server_url + _view(running))
    expect(page.locator("#step-table tbody tr")).to_have_count(1)
    expect(page.locator("#live-state")).not_to_have_text("loading")
    expect(page.locator("#run-status")).to_have_text("running")

    def finish_the_run():
        # Another thread: Playwright's sync API keeps an event loop running in this one.
        from django.db import connection

        now = timezone.now()
        try:
            with schema_context("org_alpha"):
                _finish(now)
        finally:
            connection.close()

    def _finish(now):
        RunEvent.objects.create(
            run=running,
            seq=2,
            kind="note",
            name="second",
            outcome="failed",
            started_at=now,
            duration_ms=3.0,
            at=now,
            error="boom",
        )
        Run.objects.filter(pk=running.pk).update(
            status=Run.Status.FAILED, finished_at=now, duration_ms=10.0
        )

    worker = threading.Thread(target=finish_the_run)
    worker.start()
    worker.join(timeout=30)

    # Ended in the database alone (no live frames): the socket finds it after a quiet spell
    # (engine/runs/consumers.QUIET_SECONDS) and its publisher's grace (live.CLOSE_SECONDS).
    expect(page.locator("#step-table tbody tr")).to_have_count(2, timeout=15_000)
    expect(page.locator("#run-status")).to_have_text("failed")
    expect(page.locator("#live-state")).to_have_text("finished")
    expect(page.locator("#run-diagram g.node.failed")).to_have_count(1)
    page.locator("#step-table tbody tr").nth(1).click()
    expect(page.locator("#step-error")).to_have_text("boom")
    # An admin gets the replay button.
    expect(page.locator("#step-actions")).to_be_visible()
    assert errors == []


@needs_browser
def test_lineage_log_and_replay_panels_render_the_documented_shapes(
    world, view_runs, live_server_url, browser_page
):
    """The page's side of the contract: the browser answers lineage, logs and replay for a run
    with made-up steps in the shapes the API documents, so every panel is drawn from known data.
    (test_the_panels_work_against_the_real_endpoints drives the same panels on a real run.)"""
    login, errors = browser_page
    page = login("alpha-admin", "pw-admin")
    run = view_runs["mine"]
    run_id = str(run.pk)
    replay_id = "7f1d4b7e-0000-4000-8000-000000000001"
    posted: list[dict] = []

    def answer(route):
        request = route.request
        path = request.url.split(f"/runs/{run_id}/", 1)[-1]
        suffix = path.split("?", 1)[0]
        body: dict | None = None
        status = 200
        if suffix == "lineage/" and "step=" not in path:
            body = {
                "run": run_id,
                "nodes": [
                    {"seq": s, "name": n, "kind": k, "status": st}
                    for s, n, k, st in (
                        (1, "agent", "note", "completed"),
                        (3, "calculator", "tool_call", "completed"),
                        (4, "finish", "note", "failed"),
                    )
                ],
                "edges": [
                    {"from": None, "to": 1, "field": "question"},
                    {"from": 3, "to": 4, "field": "answer"},
                ],
            }
        elif suffix == "lineage/":
            assert "step=4" in path and "field=answer" in path
            body = {
                "run": run_id,
                "step": 4,
                "field": "answer",
                "chain": [
                    {
                        "seq": 3,
                        "name": "calculator",
                        "kind": "tool_call",
                        "field": "answer",
                        "value_preview": "42",
                    },
                    {
                        "seq": None,
                        "name": "input",
                        "kind": "input",
                        "field": "question",
                        "value_preview": '"6*7"',
                    },
                ],
            }
        elif suffix == "logs/":
            body = {
                "results": [
                    {
                        "step": 3,
                        "level": "info",
                        "message": "calculating 6*7",
                        "at": "2026-06-01T12:00:00.140Z",
                    },
                    {
                        "step": 4,
                        "level": "error",
                        "message": "finish broke",
                        "at": "2026-06-01T12:00:00.360Z",
                    },
                ]
            }
        elif suffix == "replay/" and request.method == "OPTIONS":
            body = {"name": "Replay"}
        elif suffix == "replay/" and request.method == "POST":
            assert request.headers.get("x-csrftoken")
            posted.append(json.loads(request.post_data))
            status = 201
            body = {
                "id": replay_id,
                "status": "succeeded",
                "replay_of": run_id,
                "diff": {"answer": {"before": 42, "after": 43}},
            }
        if body is None:
            return route.continue_()
        return route.fulfill(status=status, content_type="application/json", body=json.dumps(body))

    page.route(lambda url: f"/runs/{run_id}/" in url and "/api/v1/" in url, answer)
    page.goto(live_server_url + _view(run))

    page.locator("#run-diagram[data-drawn='1'] svg").wait_for()
    # The data edge from the lineage graph is drawn, labelled with its field.
    expect(page.locator("#run-diagram .edgeLabels")).to_contain_text("answer")
    log = page.locator("#run-log-lines li")
    expect(page.locator("#run-log")).to_be_visible()
    expect(log).to_have_count(2)
    expect(log.nth(0)).to_contain_text("step 3  calculating 6*7")
    expect(log.nth(1)).to_have_class("log-error")

    page.locator("#step-table tbody tr").nth(3).click()
    page.locator("#lineage-fields button", has_text="answer").click()
    chain = page.locator("#lineage-chain li")
    expect(chain).to_have_count(2)
    expect(chain.nth(0)).to_have_text("step 3 calculator (tool_call) · answer = 42")
    expect(chain.nth(1)).to_have_text('the run\'s input · question = "6*7"')
    chain.nth(0).click()
    expect(page.locator("#step-title")).to_contain_text("calculator")

    page.locator("#replay-step").click()
    result = page.locator("#replay-result")
    expect(result).to_contain_text("answer: 42 → 43")
    assert posted == [{"step": 3}]
    link = result.locator("a")
    assert link.get_attribute("href") == f"{PAGES}/{replay_id}/view/"
    page.locator("#replay-from").click()
    expect(result).to_contain_text("answer: 42 → 43")
    assert posted == [{"step": 3}, {"from_step": 3}]
    page.screenshot(path=str(ARTIFACTS / "run-view-panels.png"), full_page=True)
    assert errors == []


@pytest.fixture
def panel_run(world, traced_orchestrator, as_key):
    """A real run of a flow through .child, .sync and .split, made before the browser starts (its
    sync API runs an event loop in this thread, where Django refuses database calls)."""
    from engine.models import RunLog

    client = as_key(world.alpha.keys["admin"])
    response = client.post(
        f"/api/v1/orgs/alpha/orchestrators/{traced_orchestrator.id}/invoke/",
        {"messages": [{"role": "user", "content": "hello panels"}]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    run_id = response.json()["run"]
    # The traced flow's built-in notes log nothing: one line as a note's logger would leave it
    # (capture itself is engine/runs/tests/test_live.py's).
    with schema_context("org_alpha"):
        RunLog.objects.create(
            run_id=run_id,
            cursor=10_000,
            step_seq=6,
            level="warning",
            logger="plugins.example",
            message="the agent says hello",
            at=timezone.now(),
        )
    lineage = client.get(f"/api/v1/orgs/alpha/runs/{run_id}/lineage/?step=6&field=messages")
    return run_id, lineage.json()["chain"]


@needs_browser
def test_the_panels_work_against_the_real_endpoints(
    world, panel_run, live_server_url, browser_page
):
    """The page draws the lineage's data edges, walks a value back to the run's input, shows the
    run's log and replays a step, all through the real endpoints."""
    run_id, chain = panel_run
    login, errors = browser_page
    page = login("alpha-admin", "pw-admin")
    page.goto(f"{live_server_url}{PAGES}/{run_id}/view/")
    page.locator("#run-diagram[data-drawn='1'] svg").wait_for()
    # The lineage's data edge prepare_prompt → agent, labelled with its field.
    expect(page.locator("#run-diagram .edgeLabels")).to_contain_text("messages")
    log = page.locator("#run-log-lines li")
    expect(log).to_have_count(1)
    expect(log.first).to_contain_text("step 6  the agent says hello")

    page.locator('#step-table tr[data-seq="6"]').click()
    page.locator("#lineage-fields button", has_text="messages").click()
    links = page.locator("#lineage-chain li")
    expect(links).to_have_count(len(chain))
    for index, link in enumerate(chain):
        where = "the run's input" if link["seq"] is None else f"step {link['seq']} {link['name']}"
        expect(links.nth(index)).to_contain_text(where)

    page.locator('#step-table tr[data-seq="4"]').click()
    page.locator("#replay-step").click()
    result = page.locator("#replay-result")
    # A deterministic step replayed from its recorded inputs: the same outputs.
    expect(result).to_contain_text("Same outputs as the original.", timeout=30_000)
    expect(result.locator("a")).to_contain_text("replay ")
    assert errors == []
