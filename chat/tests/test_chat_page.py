"""The chat page: access by role (Django's test client) and the real thing in headless Chromium.

The browser tests drive a live uvicorn process on the test database, as a user would: log in,
pick an orchestrator, watch the reply stream, see tool calls, cancel, lose the connection and
catch up, reload and resume.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from cadence_site.testing import (
    CHROMIUM_ARGS,
    browser_skip_reason,
    find_chromium,
    start_live_server,
    test_database_url,
)

ROOT = Path(__file__).resolve().parents[2]
PAGE = "/orgs/alpha/chat/"
ARTIFACTS = ROOT / "var" / "test-artifacts" / "chat"
SCREENSHOT = str(ARTIFACTS / "chat-desktop.png")


CHROMIUM = find_chromium()
BROWSER_SKIP = browser_skip_reason()
if not BROWSER_SKIP:
    from playwright.sync_api import expect, sync_playwright
needs_browser = pytest.mark.skipif(bool(BROWSER_SKIP), reason=BROWSER_SKIP)


def _client(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


# --- access, without a browser ----------------------------------------------------------------


def test_member_gets_the_page_with_the_ready_orchestrators(world, chat_orchestrator):
    from orchestrators.models import OrchestratorInstance

    with schema_context("org_alpha"):
        OrchestratorInstance.objects.filter(slug="slowbot").update(status="failed")

    response = _client(world.alpha.users["member"]).get(PAGE)

    assert response.status_code == 200
    assert response.context["role"] == "member"
    assert response.context["can_send"] is True
    assert [o.slug for o in response.context["orchestrators"]] == ["chatbot"]
    assert b'<option value="chatbot">Chatbot (chatbot)</option>' in response.content
    assert b'id="start">' in response.content
    assert "csrftoken" in response.cookies
    config = json.loads(
        re.search(rb'id="chat-config" type="application/json">(.*?)</script>', response.content)[1]
    )
    assert config == {
        "org": "alpha",
        "role": "member",
        "canSend": True,
        "api": "/api/v1/orgs/alpha/",
        "ws": "/ws/orgs/alpha/conversations/",
    }


def test_viewer_reads_but_the_send_box_is_disabled(world, chat_orchestrator):
    response = _client(world.alpha.users["viewer"]).get(PAGE)

    assert response.status_code == 200
    assert response.context["can_send"] is False
    assert b'<select id="orchestrator" disabled>' in response.content
    assert b'id="start" disabled' in response.content
    assert b'"canSend": false' in response.content
    assert b"Your role (viewer) can read conversations but not send messages." in response.content


@pytest.mark.django_db
def test_anonymous_visitor_is_sent_to_the_login_page(world):
    response = _client().get(PAGE)

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/orgs/alpha/chat/"


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["outsider", "bravo-member"])
def test_non_member_gets_404(world, who):
    user = world.outsider if who == "outsider" else world.bravo.users["member"]

    assert _client(user).get(PAGE).status_code == 404


@pytest.mark.django_db
def test_suspended_organization_is_403(world):
    from tenants.models import Organization
    from tenants.services import organization_resume, organization_suspend

    org = Organization.objects.get(slug="alpha")
    organization_suspend(org=org)
    try:
        response = _client(world.alpha.users["member"]).get(PAGE)
    finally:
        organization_resume(org=org)

    assert response.status_code == 403


@pytest.mark.django_db
def test_tenant_admin_dashboard_links_to_the_chat(world):
    response = _client(world.alpha.users["viewer"]).get("/orgs/alpha/admin/")

    assert response.status_code == 200
    assert b'<a href="../chat/">Open chat</a>' in response.content


# --- in the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_server_url(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        server = start_live_server(test_database_url())
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def page():
    """A fresh browser per test. Playwright's sync API keeps an event loop on this thread while it
    runs, and Django refuses ORM calls while one exists: request this fixture after the database
    fixtures, so that it starts after them and stops before their teardown."""
    if BROWSER_SKIP:
        pytest.skip(BROWSER_SKIP)
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 800})
            context.set_default_timeout(15_000)
            expect.set_options(timeout=15_000)
            yield context.new_page()
        finally:
            browser.close()
    finally:
        playwright.stop()


def _log_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/?next={PAGE}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}{PAGE}")


def _start(page, orchestrator: str) -> str:
    page.select_option("#orchestrator", orchestrator)
    page.click("#start")
    expect(page.locator("#connection")).to_have_text("connected")
    expect(page.locator("#send")).to_be_enabled()
    return page.locator("button.conversation.active").get_attribute("data-id")


def _say(page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def _bodies(page) -> list[str]:
    return page.locator(".msg .body").all_text_contents()


@needs_browser
def test_member_chats_streams_sees_tools_and_resumes(
    world, chat_orchestrator, live_server_url, page
):
    frames: list[dict] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda payload: frames.append(json.loads(payload))),
    )
    _log_in(page, live_server_url, "alpha-member", "pw-member")
    expect(page.locator("#role")).to_have_text("member")

    conversation_id = _start(page, "chatbot")
    _say(page, "hello browser")

    reply = page.locator(".msg-assistant").nth(0)
    expect(reply.locator(".body")).to_have_text("Offline model. You said: hello browser")
    expect(reply).to_have_attribute("data-status", "complete")
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "message.created" and kinds[-1] == "done"
    assert "token" in kinds
    assert "".join(f["delta"] for f in frames if f["type"] == "token") == (
        "Offline model. You said: hello browser"
    )
    # The first message names the conversation in the list.
    expect(page.locator(f'button.conversation[data-id="{conversation_id}"] .title')).to_have_text(
        "hello browser"
    )

    _say(page, '/tool calculator {"expression": "6*7"}')
    tool_reply = page.locator(".msg-assistant").nth(1)
    expect(tool_reply).to_have_attribute("data-status", "complete")
    expect(tool_reply.locator(".tool-call")).to_contain_text("calculator")
    expect(tool_reply.locator(".tool-call")).to_contain_text("6*7")
    expect(tool_reply.locator(".tool-result")).to_contain_text("42")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOT)
    shown = _bodies(page)

    # Reload: the address keeps the conversation, and its stored messages come back.
    page.reload()
    expect(page.locator(".msg")).to_have_count(4)
    assert _bodies(page) == shown
    expect(page.locator(".msg-assistant").nth(1).locator(".tool-result")).to_contain_text("42")

    # A fresh visit: resume it from the list.
    page.goto(live_server_url + PAGE)
    expect(page.locator(".msg")).to_have_count(0)
    page.click(f'button.conversation[data-id="{conversation_id}"]')
    expect(page.locator(".msg")).to_have_count(4)
    assert _bodies(page)[:2] == ["hello browser", "Offline model. You said: hello browser"]
    expect(page.locator("#connection")).to_have_text("connected")


@needs_browser
def test_reconnect_fetches_what_was_missed(world, chat_orchestrator, live_server_url, page):
    blocked = {"on": False}
    routes = []
    after_requests: list[str] = []

    def route(ws):
        if blocked["on"]:
            ws.close(code=4000, reason="test: connection refused")
            return
        ws.connect_to_server()
        routes.append(ws)

    page.route_web_socket(re.compile(r"/ws/orgs/alpha/conversations/"), route)
    page.on(
        "request",
        lambda request: after_requests.append(request.url) if "?after=" in request.url else None,
    )
    _log_in(page, live_server_url, "alpha-member", "pw-member")
    conversation_id = _start(page, "chatbot")
    _say(page, "before the drop")
    expect(page.locator(".msg-assistant").nth(0)).to_have_attribute("data-status", "complete")

    # The connection drops; meanwhile another client (REST, same session) has a whole turn.
    blocked["on"] = True
    routes[-1].close(code=4000, reason="test: dropped")
    expect(page.locator("#connection")).to_have_text("disconnected")
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(
        f"{live_server_url}/api/v1/orgs/alpha/conversations/{conversation_id}/messages/",
        data={"content": "while you were away"},
        headers={"X-CSRFToken": csrf},
    )
    assert response.status == 201, response.text()
    blocked["on"] = False

    expect(page.locator(".msg-assistant").nth(1).locator(".body")).to_have_text(
        "Offline model. You said: while you were away", timeout=30_000
    )
    expect(page.locator("#connection")).to_have_text("connected", timeout=30_000)
    assert f"/conversations/{conversation_id}/messages/?after=2" in " ".join(after_requests)
    assert _bodies(page) == [
        "before the drop",
        "Offline model. You said: before the drop",
        "while you were away",
        "Offline model. You said: while you were away",
    ]


@needs_browser
def test_a_reply_that_ends_while_disconnected_is_shown_whole(
    world, chat_orchestrator, live_server_url, page
):
    blocked = {"on": False}
    routes = []

    def route(ws):
        if blocked["on"]:
            ws.close(code=4000, reason="test: connection refused")
            return
        ws.connect_to_server()
        routes.append(ws)

    page.route_web_socket(re.compile(r"/ws/orgs/alpha/conversations/"), route)
    _log_in(page, live_server_url, "alpha-member", "pw-member")
    conversation_id = _start(page, "slowbot")
    said = "tell me a long story " * 6
    _say(page, said)
    reply = page.locator(".msg-assistant").nth(0)
    expect(reply.locator(".body")).to_contain_text("Offline model.")

    # Dropped halfway through the reply, and kept away until the reply is stored.
    blocked["on"] = True
    routes[-1].close(code=4000, reason="test: dropped")
    expect(page.locator("#connection")).to_have_text("disconnected")
    messages = f"{live_server_url}/api/v1/orgs/alpha/conversations/{conversation_id}/messages/"
    for _ in range(100):
        stored = page.request.get(messages).json()["results"]
        if stored[-1]["status"] == "complete":
            break
        page.wait_for_timeout(100)
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    blocked["on"] = False

    expect(reply).to_have_attribute("data-status", "complete", timeout=30_000)
    expect(reply.locator(".body")).to_have_text("Offline model. You said: " + said)
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator(".msg")).to_have_count(2)


@needs_browser
def test_cancel_stops_a_streaming_reply(world, chat_orchestrator, live_server_url, page):
    _log_in(page, live_server_url, "alpha-member", "pw-member")
    _start(page, "slowbot")
    _say(page, "please say a great many words " * 30)

    reply = page.locator(".msg-assistant").nth(0)
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(reply.locator(".body")).to_contain_text("Offline model.")
    expect(page.locator("#cancel")).to_be_enabled()
    page.click("#cancel")

    expect(reply).to_have_attribute("data-status", "cancelled")
    expect(reply.locator(".note")).to_have_text("Cancelled.")
    expect(page.locator("#send")).to_be_enabled()
    stored = reply.locator(".body").text_content()
    assert stored.startswith("Offline model.")
    assert stored != "Offline model. You said: " + "please say a great many words " * 30


@needs_browser
def test_viewer_sees_the_page_but_cannot_send(world, live_server_url, page):
    _log_in(page, live_server_url, "alpha-viewer", "pw-viewer")

    expect(page.locator("#role")).to_have_text("viewer")
    expect(page.locator("#input")).to_be_disabled()
    expect(page.locator("#send")).to_be_disabled()
    if page.locator("#start").count():
        expect(page.locator("#start")).to_be_disabled()


@needs_browser
def test_text_is_shown_as_text_and_failures_are_visible(
    world, chat_orchestrator, live_server_url, page
):
    _log_in(page, live_server_url, "alpha-member", "pw-member")
    _start(page, "chatbot")
    markup = "<img src=x onerror=window.pwned=1><b>bold</b>"
    _say(page, markup)

    reply = page.locator(".msg-assistant").nth(0)
    expect(reply.locator(".body")).to_have_text("Offline model. You said: " + markup)
    assert page.locator(".msg-user .body").text_content() == markup
    assert page.locator(".messages img, .messages b").count() == 0
    assert page.evaluate("window.pwned") is None

    # A tool that fails: the call and its error are shown in the reply.
    _say(page, "/tool no_such_tool {}")
    tool_failed = page.locator(".msg-assistant").nth(1)
    expect(tool_failed).to_have_attribute("data-status", "complete")
    expect(tool_failed.locator(".tool-call")).to_have_text("Tool call: no_such_tool {}")
    expect(tool_failed.locator(".tool-result")).to_have_text(
        "Tool error: no_such_tool → unknown tool 'no_such_tool'"
    )

    # A refused message (the orchestrator was suspended meanwhile): the error frame is shown.
    instance_id = chat_orchestrator["fast"].id
    suspended = page.request.post(
        f"{live_server_url}/api/v1/orgs/alpha/orchestrators/{instance_id}/suspend/",
        headers={"Authorization": f"Bearer {world.alpha.keys['admin']}"},
    )
    assert suspended.status == 200, suspended.text()
    _say(page, "anyone there?")
    expect(page.locator("#banner")).to_be_visible()
    expect(page.locator("#banner")).to_have_text(
        "orchestrator_suspended: The orchestrator 'chatbot' is suspended."
    )
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator(".msg")).to_have_count(4)


@needs_browser
def test_a_message_typed_while_a_reply_is_streaming_is_queued_and_sent_after_it(
    world, chat_orchestrator, live_server_url, page
):
    _log_in(page, live_server_url, "alpha-member", "pw-member")
    _start(page, "slowbot")
    _say(page, "first " * 20)
    first = page.locator(".msg-assistant").nth(0)
    expect(first).to_have_attribute("data-status", "streaming")

    _say(page, "second, typed during the reply")
    expect(page.locator(".msg-queued")).to_have_count(1)

    second = page.locator(".msg-assistant").nth(1)
    expect(second).to_have_attribute("data-status", "complete", timeout=30_000)
    expect(second.locator(".body")).to_have_text(
        "Offline model. You said: second, typed during the reply"
    )
    expect(page.locator(".msg-queued")).to_have_count(0)
    assert _bodies(page)[2] == "second, typed during the reply"
    expect(page.locator(".msg")).to_have_count(4)


@needs_browser
def test_replies_are_rendered_as_sanitized_markdown(
    world, chat_orchestrator, live_server_url, page
):
    _log_in(page, live_server_url, "alpha-member", "pw-member")
    _start(page, "chatbot")
    text = (
        "**bold** and `code` and [docs](https://example.com/x) and [bad](javascript:alert(1))\n\n"
        "- one\n- two\n\n```\nx = 1\n```"
    )
    page.fill("#input", text)
    page.click("#send")

    reply = page.locator(".msg-assistant").nth(0)
    expect(reply).to_have_attribute("data-status", "complete")
    body = reply.locator(".body")
    expect(body.locator("strong")).to_have_text("bold")
    expect(body.locator("li")).to_have_count(2)
    expect(body.locator("pre code")).to_have_text("x = 1\n")
    link = body.locator('a[href="https://example.com/x"]')
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_attribute("target", "_blank")
    assert body.locator('a[href^="javascript"]').count() == 0
    # What the user typed stays text.
    assert page.locator(".msg-user .body").text_content() == text
    assert page.locator(".msg-user strong").count() == 0


@needs_browser
def test_the_page_is_usable_at_phone_width(world, chat_orchestrator, live_server_url, page):
    page.set_viewport_size({"width": 360, "height": 740})
    _log_in(page, live_server_url, "alpha-member", "pw-member")
    expect(page.locator("#start")).to_be_visible()
    _start(page, "chatbot")
    expect(page.locator("#sidebar")).to_be_hidden()
    _say(page, "a sentence long enough to wrap over a few lines on a small phone screen")
    reply = page.locator(".msg-assistant").nth(0)
    expect(reply).to_have_attribute("data-status", "complete")

    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert reply.bounding_box()["width"] > 250
    assert page.locator("#input").bounding_box()["width"] > 200
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat-phone.png"))
    page.click("#toggle-sidebar")
    expect(page.locator("#sidebar")).to_be_visible()
