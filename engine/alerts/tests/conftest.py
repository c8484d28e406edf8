from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django_tenants.utils import schema_context

from chat.tests.conftest import chat_orchestrator  # noqa: F401
from engine.durable.tests.conftest import queue_name  # noqa: F401
from engine.runs.tests.conftest import flaky  # noqa: F401
from orchestrators.tests.conftest import _openai_server_process, openai_server  # noqa: F401
from tenants.teams.tests.test_scoping import client_for, tw  # noqa: F401 - test_teams.py


class _Receiver(BaseHTTPRequestHandler):
    """A webhook receiver: records each delivery; answers the scripted statuses, then 200."""

    def do_POST(self):  # noqa: N802 - http.server's naming
        server = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with server.lock:
            status = server.statuses.pop(0) if server.statuses else 200
            server.received.append((dict(self.headers), body, status))
            server.arrived.set()
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver(settings):
    settings.CADENCE_EGRESS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.daemon_threads = True
    server.received, server.statuses = [], []
    server.lock, server.arrived = threading.Lock(), threading.Event()
    server.url = f"http://127.0.0.1:{server.server_port}/hook"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def clean_rules(world, committed_db):
    """Rules in alpha (committed, for tests whose turns write from other threads), removed after."""
    from engine.alerts.models import AlertRule

    with schema_context("org_alpha"):
        AlertRule.objects.all().delete()
    yield
    with schema_context("org_alpha"):
        AlertRule.objects.all().delete()


@pytest.fixture
def queued(monkeypatch):
    """Alert tasks recorded instead of published; `drain()` runs them here (the real task code,
    eagerly), the ones they enqueue included."""
    from engine.alerts import tasks

    pending: list = []
    monkeypatch.setattr(tasks, "enqueue", lambda task, **kwargs: pending.append((task, kwargs)))

    def drain() -> list:
        ran = []
        while pending:
            task, kwargs = pending.pop(0)
            ran.append((task.name, kwargs))
            task.apply(kwargs=kwargs).get()
        return ran

    pending_drain = drain
    pending_drain.pending = pending
    return pending_drain


@pytest.fixture
def make_rule():
    """Create a rule in alpha through the service; its webhook secret is on `.secret`."""
    from engine.alerts.services import alert_rule_create

    def make(**fields):
        fields.setdefault("name", fields["kind"])
        with schema_context("org_alpha"):
            rule, secret = alert_rule_create(actor="test", **fields)
        rule.secret = secret
        return rule

    return make
