"""MCP servers as tools, against a real MCP server process the tests start."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from django_tenants.utils import schema_context

from plugins.models import McpServer
from plugins.tests.mcp_server import TOKEN

pytestmark = pytest.mark.django_db

BASE = "/api/v1/orgs/alpha"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class McpProcess:
    def __init__(self):
        self.port = _free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self, *flags: str) -> McpProcess:
        self.stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "plugins.tests.mcp_server", str(self.port), *flags],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the MCP server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="module")
def _mcp_process():
    server = McpProcess().start()
    yield server
    server.stop()


@pytest.fixture
def mcp_server(_mcp_process, settings):
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = [*settings.CADENCE_EGRESS_ALLOWED_HOSTS, "127.0.0.1"]
    if _mcp_process.process is None or _mcp_process.process.poll() is not None:
        _mcp_process.start()
    return _mcp_process


@pytest.fixture
def admin(world, as_key):
    return as_key(world.alpha.keys["admin"])


def register(client, url, **changes):
    body = {
        "name": "calc",
        "url": url,
        "allowed_tools": ["add", "echo"],
        "credential": TOKEN,
    } | changes
    return client.post(f"{BASE}/mcp-servers/", body, format="json")


def servers() -> list[str]:
    with schema_context("org_alpha"):
        return list(McpServer.objects.values_list("name", flat=True))


@pytest.mark.parametrize("mode,protocol", [("auto", "2026-07-28"), ("legacy", "2025-11-25")])
def test_registration_lists_the_allowed_tools_and_hides_the_credential(
    admin, mcp_server, mode, protocol
):
    response = register(admin, mcp_server.url, mode=mode)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["protocol_version"] == protocol
    assert [t["name"] for t in body["tools"]] == ["add", "echo"]
    assert body["credential"] == "…oken" and TOKEN not in json.dumps(body)
    with schema_context("org_alpha"):
        assert TOKEN not in McpServer.objects.get().credential_encrypted


def test_registration_and_deletion_are_audited_without_the_credential(admin, mcp_server):
    from tenants.audit.models import AuditEvent

    assert register(admin, mcp_server.url).status_code == 201
    server_id = admin.get(f"{BASE}/mcp-servers/").json()["results"][0]["id"]
    assert admin.delete(f"{BASE}/mcp-servers/{server_id}/").status_code == 204

    with schema_context("org_alpha"):
        events = list(
            AuditEvent.objects.filter(action__startswith="mcp_server.")
            .order_by("created_at")
            .values_list("action", "target", "details")
        )
    assert [(action, target) for action, target, _ in events] == [
        ("mcp_server.registered", "calc"),
        ("mcp_server.deleted", "calc"),
    ]
    assert events[0][2]["after"]["url"] == mcp_server.url
    assert events[0][2]["after"]["credential_hint"] == "…oken"
    assert events[1][2]["before"]["allowed_tools"] == ["add", "echo"]
    assert TOKEN not in json.dumps([details for _, _, details in events])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/mcp",
        "http://10.0.0.8/mcp",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]:9/mcp",
        "http://localhost:9/mcp",
        "file:///etc/passwd",
    ],
)
def test_registration_refuses_private_addresses_before_connecting(admin, url):
    response = register(admin, url)
    assert response.status_code == 400
    assert response.json()["error"]["code"] in ("egress_denied", "invalid")
    assert servers() == []


def test_a_redirect_to_a_private_address_is_not_followed(admin, http_server):
    response = register(admin, http_server.base_url + "/redirect")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "mcp_unreachable"
    assert [r["path"] for r in http_server.requests] == ["/redirect"] * len(http_server.requests)
    assert servers() == []


def test_unknown_allowed_tools_and_a_bad_credential_are_refused(admin, mcp_server):
    response = register(admin, mcp_server.url, allowed_tools=["add", "nope"])
    assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_mcp_tool"
    response = register(admin, mcp_server.url, credential="wrong")
    assert response.status_code == 400 and response.json()["error"]["code"] == "mcp_unreachable"
    assert servers() == []


def test_members_read_only_admins_register_and_outsiders_see_nothing(world, as_key, mcp_server):
    member = as_key(world.alpha.keys["member"])
    assert register(member, mcp_server.url).status_code == 403
    assert member.get(f"{BASE}/mcp-servers/").status_code == 200
    assert as_key(world.alpha.keys["viewer"]).get(f"{BASE}/mcp-servers/").status_code == 403
    admin = as_key(world.alpha.keys["admin"])
    server_id = register(admin, mcp_server.url).json()["id"]
    bravo = as_key(world.bravo.keys["owner"])
    assert bravo.get(f"{BASE}/mcp-servers/").status_code == 404
    assert bravo.get("/api/v1/orgs/bravo/mcp-servers/").json()["results"] == []
    assert bravo.get(f"/api/v1/orgs/bravo/mcp-servers/{server_id}/").status_code == 404
    assert bravo.post(f"/api/v1/orgs/bravo/mcp-servers/{server_id}/approve/").status_code == 404
    assert servers() == ["calc"]


@pytest.fixture
def eager():
    from cadence_site.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def _orchestrator(admin, captured, tools):
    llm = admin.post(
        f"{BASE}/llm-configs/",
        {"name": "offline", "provider": "offline", "model": "m"},
        format="json",
    ).json()["id"]
    with captured(execute=True):
        return admin.post(
            f"{BASE}/orchestrators/",
            {"slug": "mcp", "name": "MCP", "llm_config": llm, "tools": tools},
            format="json",
        )


def _invoke(client, instance_id, text):
    return client.post(
        f"{BASE}/orchestrators/{instance_id}/invoke/",
        {"messages": [{"role": "user", "content": text}]},
        format="json",
    )


def test_mcp_tools_are_orchestrator_tools_and_a_changed_list_blocks_them(
    world, as_key, admin, mcp_server, eager, django_capture_on_commit_callbacks, monkeypatch
):
    server_id = register(admin, mcp_server.url).json()["id"]
    created = _orchestrator(admin, django_capture_on_commit_callbacks, ["calculator", "mcp:calc"])
    assert created.status_code == 201, created.json()
    instance_id = created.json()["id"]
    assert admin.get(f"{BASE}/orchestrators/{instance_id}/").json()["status"] == "ready"

    member = as_key(world.alpha.keys["member"])
    reply = _invoke(member, instance_id, '/tool add {"a": 20, "b": 22}')
    assert reply.status_code == 200, reply.json()
    assert reply.json()["tool_calls"][0]["result"] == 42
    reply = _invoke(member, instance_id, "/tool secret_admin {}")
    assert reply.json()["tool_calls"][0]["result"] == {"error": "unknown tool 'secret_admin'"}

    # The server now lists another tool: once the list-check window has passed (0 here, as if
    # 30 s went by), calls are refused and the server waits for approval.
    monkeypatch.setattr("plugins.mcp.LIST_CHECK_INTERVAL", 0.0)
    mcp_server.start("extra")
    reply = _invoke(member, instance_id, '/tool add {"a": 1, "b": 1}')
    assert "tool list changed" in reply.json()["tool_calls"][0]["result"]["error"]
    admin = as_key(world.alpha.keys["admin"])
    detail = admin.get(f"{BASE}/mcp-servers/{server_id}/").json()
    assert detail["status"] == "needs_approval"
    assert "drop_tables" in [t["name"] for t in detail["pending_tools"]]
    assert admin.post(f"{BASE}/orchestrators/{instance_id}/rebuild/").status_code == 400

    with django_capture_on_commit_callbacks(execute=True):
        approved = admin.post(f"{BASE}/mcp-servers/{server_id}/approve/")
    assert approved.status_code == 200 and approved.json()["status"] == "active"
    assert [t["name"] for t in approved.json()["tools"]] == ["add", "echo"]
    detail = admin.get(f"{BASE}/orchestrators/{instance_id}/").json()
    assert detail["status"] == "ready" and detail["config_hash"] != created.json()["config_hash"]
    assert (
        _invoke(member, instance_id, '/tool add {"a": 1, "b": 1}').json()["tool_calls"][0]["result"]
        == 2
    )
    mcp_server.start()


def test_the_egress_policy_is_checked_again_at_call_time(
    world, as_key, admin, mcp_server, eager, settings, django_capture_on_commit_callbacks
):
    register(admin, mcp_server.url)
    instance_id = _orchestrator(admin, django_capture_on_commit_callbacks, ["mcp:calc"]).json()[
        "id"
    ]
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = []
    reply = _invoke(as_key(world.alpha.keys["member"]), instance_id, '/tool echo {"text": "hi"}')
    assert "private or reserved" in reply.json()["tool_calls"][0]["result"]["error"]


def test_an_unknown_server_is_refused_for_an_orchestrator(
    admin, django_capture_on_commit_callbacks
):
    response = _orchestrator(admin, django_capture_on_commit_callbacks, ["mcp:nowhere"])
    assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_tool"


def test_a_plugin_can_bring_a_registered_servers_tools(
    world, as_key, admin, mcp_server, eager, django_capture_on_commit_callbacks
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from plugins.tests.conftest import package

    register(admin, mcp_server.url)
    data = {
        "schema_version": 1,
        "id": "com.acme.mcpwrap",
        "name": "Calc over MCP",
        "version": "1.0.0",
        "kind": "tenant",
        "provides": {"mcp_servers": [{"name": "calc", "allowed_tools": ["add"]}]},
        "capabilities": {"mcp_servers": ["calc"]},
    }
    raw = package(data)
    assert (
        admin.post(
            f"{BASE}/plugins/", {"package": SimpleUploadedFile("p.zip", raw)}, format="multipart"
        ).status_code
        == 201
    )
    llm = admin.post(
        f"{BASE}/llm-configs/",
        {"name": "offline", "provider": "offline", "model": "m"},
        format="json",
    ).json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        created = admin.post(
            f"{BASE}/orchestrators/",
            {
                "slug": "wrap",
                "name": "Wrap",
                "llm_config": llm,
                "plugins": [{"id": "com.acme.mcpwrap"}],
            },
            format="json",
        ).json()
    from orchestrators.models import OrchestratorInstance
    from orchestrators.services import runtime_config

    with schema_context("org_alpha"):
        instance = OrchestratorInstance.objects.select_related("llm_config").get(pk=created["id"])
        assert [t.name for t in runtime_config(instance, org_slug="alpha").tools] == ["add"]
    reply = _invoke(as_key(world.alpha.keys["member"]), created["id"], '/tool add {"a": 2, "b": 3}')
    assert reply.json()["tool_calls"][0]["result"] == 5


def _admin_page(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def test_admins_register_an_mcp_server_in_the_admin_and_members_cannot(world, mcp_server):
    add = "/orgs/alpha/admin/plugins/mcpserver/add/"
    form = {
        "name": "calc",
        "url": mcp_server.url,
        "mode": "auto",
        "allowed_tools": "add, echo",
        "credential": TOKEN,
    }
    assert _admin_page(world.alpha.users["member"]).post(add, form).status_code == 403
    assert servers() == []

    admin_page = _admin_page(world.alpha.users["admin"])
    refused = admin_page.post(add, {**form, "allowed_tools": "add, nope"})
    assert refused.status_code == 200  # the form again, the error beside its field
    assert refused.context["adminform"].form.errors["allowed_tools"]
    private = admin_page.post(add, {**form, "url": "http://10.0.0.8/mcp"})
    assert private.context["adminform"].form.errors["url"]
    assert servers() == []

    created = admin_page.post(add, form)
    assert created.status_code == 302, created.context["adminform"].form.errors
    with schema_context("org_alpha"):
        server = McpServer.objects.get()
    assert [t["name"] for t in server.tools] == ["add", "echo"]
    assert TOKEN not in server.credential_encrypted
    page = admin_page.get(f"/orgs/alpha/admin/plugins/mcpserver/{server.pk}/change/")
    assert page.status_code == 200 and TOKEN.encode() not in page.content

    refreshed = admin_page.post(
        "/orgs/alpha/admin/plugins/mcpserver/",
        {"action": "refresh", "_selected_action": [str(server.pk)]},
    )
    assert refreshed.status_code == 302
    deleted = admin_page.post(
        f"/orgs/alpha/admin/plugins/mcpserver/{server.pk}/delete/", {"post": "yes"}
    )
    assert deleted.status_code == 302 and servers() == []
