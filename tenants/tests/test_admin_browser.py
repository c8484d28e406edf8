"""Every admin page, opened in headless Chromium as each kind of user, at desktop and phone width.

For each role: the pages it may read answer 200 with no "Not available" and with their inlines
(a run's steps, a conversation's messages) shown; the pages it may not read are refused (403, or
the 404 an outsider gets); the add pages follow its right to write. With
CADENCE_TEST_SCREENSHOTS=1, screenshots of every page opened land in
var/test-artifacts/admin/<role>/ (gitignored), to look at. No check reads them, and they are
off by default: with them the module took 51.4 and 53.6 s of CPU and 114 and 111 s, without
them 46.9 and 44.5 s of CPU and 99 and 79 s (2026-12-06, alternated, load 6.5-10.5).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
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
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

pytestmark = pytest.mark.skipif(bool(BROWSER_SKIP), reason=BROWSER_SKIP)

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "admin"
SCREENSHOTS = os.environ.get("CADENCE_TEST_SCREENSHOTS", "") not in ("", "0")
WIDTHS = {"desktop": (1280, 860), "phone": (360, 740)}
ORG = "/orgs/alpha/admin"


@pytest.fixture(scope="module")
def live_server_url(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        server = start_live_server(test_database_url())
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def admin_data(world, committed_db):
    """In alpha: an LLM configuration, a built orchestrator, a conversation with its messages and a
    run with its steps (committed: the live server reads them from its own connections)."""
    from chat.models import Conversation, Message
    from engine.alerts.evaluate import Finding
    from engine.alerts.models import AlertRule
    from engine.alerts.services import alert_fire, alert_rule_create
    from engine.models import Run, RunEvent
    from orchestrators.models import LLMConfig, OrchestratorInstance
    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build
    from plugins.models import PluginVersion
    from plugins.services import plugin_upload
    from plugins.storage import package_delete
    from plugins.tests.conftest import manifest, package

    def cleanup():
        with schema_context("org_alpha"):
            for row in PluginVersion.objects.filter(plugin_id="com.acme.pagetour"):
                package_delete(key=row.storage_key)
                row.delete()
            AlertRule.objects.filter(name="page tour").delete()
            Run.objects.filter(orchestrator_slug="pagebot").delete()
            Conversation.objects.filter(title="page tour").delete()
            OrchestratorInstance.objects.filter(slug="pagebot").delete()
            LLMConfig.objects.filter(name="page-offline").delete()

    cleanup()
    with schema_context("org_alpha"):
        config = llm_config_create(
            name="page-offline", provider="offline", model="m", api_key="sk-page-secret-98765"
        )
        bot = orchestrator_create(slug="pagebot", name="Pagebot", llm_config=config)
    instance_build(schema_name="org_alpha", instance_id=str(bot.id), expected_hash=bot.config_hash)
    with schema_context("org_alpha"):
        now = timezone.now()
        run = Run.objects.create(
            orchestrator=bot,
            orchestrator_slug="pagebot",
            trigger=Run.Trigger.REST,
            principal="user:alpha-member",
            status=Run.Status.SUCCEEDED,
            input={"message": "hello pages"},
            output="Offline model. You said: hello pages",
            usage={"total_tokens": 12},
            finished_at=now,
            owner_user_id=world.alpha.users["member"].pk,
            duration_ms=3.5,
        )
        for seq, name in enumerate(["prepare_prompt", "call_model", "finish"], start=1):
            RunEvent.objects.create(
                run=run, seq=seq, kind="step", name=name, outcome="completed", at=now
            )
        conversation = Conversation.objects.create(
            orchestrator=bot,
            owner_user_id=world.alpha.users["member"].pk,
            title="page tour",
            last_seq=2,
        )
        Message.objects.create(conversation=conversation, seq=1, role="user", content="hello pages")
        Message.objects.create(
            conversation=conversation,
            seq=2,
            role="assistant",
            content="Offline model. You said: hello pages",
            run=run,
        )
        plugin, _ = plugin_upload(raw=package(manifest(id="com.acme.pagetour")))
        rule, _ = alert_rule_create(
            actor="test", name="page tour", kind="run_failed", emails=["ops@alpha.test"]
        )
        alert_fire(rule=rule, finding=Finding(f"run:{run.id}", "page tour firing", {}, str(run.id)))
    yield {
        "run": run,
        "conversation": conversation,
        "bot": bot,
        "config": config,
        "plugin": plugin,
        "rule": rule,
    }
    cleanup()


def _pages(data, world) -> list[tuple[str, str, str]]:
    """(name, path, who may open it): "all" members, "admin" and owners, "run-owner" (admins and
    the member whose conversation it ran), "operator", or "anyone"."""
    from tenants.models import ApiKey, Membership

    member = Membership.objects.get(user=world.alpha.users["member"], organization__slug="alpha")
    key = ApiKey.objects.get(pk=world.alpha.key_ids["member"])
    org_pk = world.alpha.org.pk
    return [
        ("dashboard", f"{ORG}/", "all"),
        ("audit", f"{ORG}/audit/auditevent/", "admin"),
        ("llm-list", f"{ORG}/orchestrators/llmconfig/", "all"),
        ("llm-change", f"{ORG}/orchestrators/llmconfig/{data['config'].pk}/change/", "all"),
        ("llm-add", f"{ORG}/orchestrators/llmconfig/add/", "admin"),
        ("orch-list", f"{ORG}/orchestrators/orchestratorinstance/", "all"),
        (
            "orch-change",
            f"{ORG}/orchestrators/orchestratorinstance/{data['bot'].pk}/change/",
            "all",
        ),
        ("orch-add", f"{ORG}/orchestrators/orchestratorinstance/add/", "admin"),
        ("run-list", f"{ORG}/engine/run/", "all"),
        ("run-change", f"{ORG}/engine/run/{data['run'].pk}/change/", "run-owner"),
        ("conv-list", f"{ORG}/chat/conversation/", "admin"),
        ("conv-change", f"{ORG}/chat/conversation/{data['conversation'].pk}/change/", "admin"),
        ("alert-list", f"{ORG}/alerts/alertrule/", "all"),
        ("alert-change", f"{ORG}/alerts/alertrule/{data['rule'].pk}/change/", "all"),
        ("alert-add", f"{ORG}/alerts/alertrule/add/", "admin"),
        ("alert-history", f"{ORG}/alerts/alertevent/?rule__id__exact={data['rule'].pk}", "all"),
        ("members", f"{ORG}/tenants/membership/", "all"),
        ("member-change", f"{ORG}/tenants/membership/{member.pk}/change/", "all"),
        ("member-add", f"{ORG}/tenants/membership/add/", "admin"),
        ("keys", f"{ORG}/tenants/apikey/", "admin"),
        ("key-change", f"{ORG}/tenants/apikey/{key.pk}/change/", "admin"),
        ("key-add", f"{ORG}/tenants/apikey/add/", "admin"),
        ("plugin-list", f"{ORG}/plugins/pluginversion/", "all"),
        ("plugin-change", f"{ORG}/plugins/pluginversion/{data['plugin'].pk}/change/", "all"),
        ("plugin-add", f"{ORG}/plugins/pluginversion/add/", "admin"),
        ("mcp-list", f"{ORG}/plugins/mcpserver/", "all"),
        ("dead-letters", f"{ORG}/durable/queuedrun/", "all"),
        ("usage", f"{ORG}/limits/usageday/", "admin"),
        ("member-history", f"{ORG}/tenants/membership/{member.pk}/history/", "all"),
        ("sso-list", f"{ORG}/sso/ssoprovider/", "admin"),
        ("sso-add", f"{ORG}/sso/ssoprovider/add/", "admin"),
        ("op-dashboard", "/admin/", "operator"),
        ("op-orgs", "/admin/tenants/organization/", "operator"),
        ("op-org-change", f"/admin/tenants/organization/{org_pk}/change/", "operator"),
        ("op-org-add", "/admin/tenants/organization/add/", "operator"),
        ("op-plans", "/admin/tenants/plan/", "operator"),
        ("op-members", "/admin/tenants/membership/", "operator"),
        ("op-keys", "/admin/tenants/apikey/", "operator"),
        ("op-users", "/admin/auth/user/", "operator"),
        ("op-plan-add", "/admin/tenants/plan/add/", "operator"),
        ("op-domains", "/admin/tenants/domain/", "operator"),
        ("op-system-plugins", "/admin/system_plugins/systempluginversion/", "operator"),
        ("op-system-plugin-add", "/admin/system_plugins/systempluginversion/add/", "operator"),
        ("op-org-limits", "/admin/limits/organizationlimits/", "operator"),
        ("op-org-limits-add", "/admin/limits/organizationlimits/add/", "operator"),
        ("op-key-limits", "/admin/limits/apikeylimits/", "operator"),
        ("op-usage", "/admin/limits/usageday/", "operator"),
        ("op-org-history", f"/admin/tenants/organization/{org_pk}/history/", "operator"),
        ("op-org-delete", f"/admin/tenants/organization/{org_pk}/delete/", "operator"),
        ("landing", "/", "anyone"),
    ]


USERS = {
    # name: (username, password, role in alpha or None, operator?)
    "operator": ("staffer", "pw-staff", None, True),
    "owner": ("alpha-owner", "pw-owner", "owner", False),
    "admin": ("alpha-admin", "pw-admin", "admin", False),
    "member": ("alpha-member", "pw-member", "member", False),
    "viewer": ("alpha-viewer", "pw-viewer", "viewer", False),
    "other-org": ("bravo-owner", "pw-owner", None, False),
}
# Inline groups that must be on the page for whoever may open it.
INLINES = {"run-change": "#events-group", "conv-change": "#messages-group"}
INLINE_TEXT = {"run-change": "call_model", "conv-change": "hello pages"}


def _expected(who: str, role: str | None, operator: bool) -> str:
    """ "ok", "forbidden" (403), "missing" (404) or "login" (sent to a login page)."""
    if who == "anyone":
        return "ok"
    if who == "operator":
        return "ok" if operator else "login"
    if role is None:
        return "missing"
    if who == "admin" and role not in ("owner", "admin"):
        return "forbidden"
    if who == "run-owner" and role == "viewer":
        # Runs follow their conversation's privacy: another member's run is not in the list,
        # and Django's admin sends its address back to the index.
        return "hidden"
    return "ok"


@pytest.fixture
def operator(world, committed_db):
    staff = world.staff
    staff.is_superuser = True
    staff.save(update_fields=["is_superuser"])
    yield staff
    staff.is_superuser = False
    staff.save(update_fields=["is_superuser"])


def _check_page(page, base, folder, name, path, who, role, is_operator) -> tuple[bool, list[str]]:
    """Opens one page at desktop width; when it may be read, checks it and takes a screenshot at
    desktop and (resized, not reloaded) phone width."""
    expected = _expected(who, role, is_operator)
    page.set_viewport_size({"width": WIDTHS["desktop"][0], "height": WIDTHS["desktop"][1]})
    response = page.goto(base + path)
    status = response.status if response else 0
    if "/login/" in page.url and "/login/" not in path:
        got = "login"
    elif status == 200 and page.url.rstrip("/").endswith("/admin") and not path.endswith("/admin/"):
        got = "hidden"
    else:
        got = {200: "ok", 403: "forbidden", 404: "missing"}.get(status, f"http {status}")
    if got != expected:
        return False, [f"{name}: expected {expected}, got {got}"]
    if got != "ok":
        return False, []
    problems = []
    body = page.content()
    if "Not available" in body or "Django administration" in body:
        problems.append(f"{name}: broken page")
    if name in INLINES:
        group = page.locator(INLINES[name])
        if group.count() != 1 or INLINE_TEXT[name] not in group.inner_text():
            problems.append(f"{name}: inline hidden")
    # The vendored libraries ran: the flow is an SVG diagram, the dashboard's chart is drawn.
    drawn = {"orch-change": ".cadence-diagram svg", "dashboard": "canvas[data-drawn='1']"}
    if name in drawn or name == "op-dashboard":
        try:
            page.locator(drawn.get(name, "canvas[data-drawn='1']")).first.wait_for(timeout=15_000)
        except PlaywrightTimeout:
            problems.append(f"{name}: not drawn")
    if name.endswith("-list") or name in ("members", "keys"):
        can_add = page.locator(".object-tools a.addlink").count() > 0
        may_add = role in ("owner", "admin") and name not in ("run-list", "conv-list")
        if can_add != may_add:
            problems.append(f"{name}: add link shown={can_add}, expected {may_add}")
    if SCREENSHOTS:
        page.screenshot(path=str(folder / f"{name}-desktop.png"), full_page=True)
    page.set_viewport_size({"width": WIDTHS["phone"][0], "height": WIDTHS["phone"][1]})
    overflow = page.evaluate("document.documentElement.scrollWidth")
    if SCREENSHOTS:
        page.screenshot(path=str(folder / f"{name}-phone.png"))
    if overflow > WIDTHS["phone"][0] + 1:
        problems.append(f"{name}: wider than a phone ({overflow} px)")
    return True, problems


@pytest.mark.parametrize("user", list(USERS))
def test_every_admin_page_as_each_user(world, admin_data, operator, live_server_url, user):
    username, password, role, is_operator = USERS[user]
    pages = _pages(admin_data, world)
    folder = ARTIFACTS / user
    folder.mkdir(parents=True, exist_ok=True)
    seen: list[str] = []
    problems: list[str] = []
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": WIDTHS["desktop"][0], "height": WIDTHS["desktop"][1]}
            )
            context.set_default_timeout(20_000)
            page = context.new_page()
            page.goto(f"{live_server_url}/accounts/login/?next=/")
            page.fill("#id_username", username)
            page.fill("#id_password", password)
            page.click("input[type=submit]")
            page.wait_for_url(f"{live_server_url}/")
            for name, path, who in pages:
                opened, found = _check_page(
                    page, live_server_url, folder, name, path, who, role, is_operator
                )
                problems.extend(found)
                if opened:
                    seen.append(name)
        finally:
            browser.close()
    finally:
        playwright.stop()
    assert problems == [], "\n".join(problems)
    # Every user opens the landing page, and alpha's members its dashboard.
    assert "landing" in seen
    assert ("dashboard" in seen) is (role is not None)
