"""Signed completion callbacks to a local receiver; refused addresses; retried failures."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django_tenants.utils import schema_context

from engine.durable import services
from engine.durable.callbacks import CallbackError, callback_secret, callback_send
from engine.durable.tasks import run_next


class _Receiver(BaseHTTPRequestHandler):
    received: list = []
    status = 200

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.headers["X-Cadence-Signature"], body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver(settings):
    settings.CADENCE_EGRESS_ALLOW_PRIVATE = True
    _Receiver.received, _Receiver.status = [], 200
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/done", _Receiver
    server.shutdown()
    server.server_close()


def test_a_finished_queued_run_calls_back_signed(
    chat_orchestrator, queue_name, receiver, monkeypatch
):
    from engine.durable import tasks

    url, handler = receiver
    sent = []
    monkeypatch.setattr(tasks.callback_task, "delay", lambda **kw: sent.append(kw))
    with schema_context("org_alpha"):
        queued, _ = services.queued_run_enqueue(
            instance=chat_orchestrator["fast"],
            message="ping",
            idempotency_key=uuid.uuid4().hex,
            callback_url=url,
        )
    assert run_next(queue=queue_name) == "succeeded"
    (call,) = sent
    assert callback_send(**{**call, "body": call["body"].encode()}) == 200
    ((signature, body),) = handler.received
    assert json.loads(body) == {
        "run": str(queued.run_id),
        "status": "succeeded",
        "output": "Offline model. You said: ping",
        "state": "succeeded",
    }
    stamp, mac = signature.split(",")
    expected = hmac.new(
        callback_secret("org_alpha").encode(), f"{stamp[2:]}.".encode() + body, hashlib.sha256
    ).hexdigest()
    assert mac == f"sha256={expected}"


def test_a_failing_receiver_is_an_error_for_celery_to_retry(receiver):
    url, handler = receiver
    handler.status = 503
    with pytest.raises(CallbackError, match="503"):
        callback_send(schema_name="org_alpha", url=url, body=b"{}")


def test_the_callback_secret_is_per_organization_and_for_admins(world, as_key, db):
    api = as_key(world.alpha.keys["admin"])
    secret = api.get("/api/v1/orgs/alpha/callbacks/secret/").json()["secret"]
    assert secret == callback_secret("org_alpha") != callback_secret("org_bravo")
    assert (
        as_key(world.alpha.keys["member"]).get("/api/v1/orgs/alpha/callbacks/secret/").status_code
        == 403
    )
    assert (
        as_key(world.bravo.keys["owner"]).get("/api/v1/orgs/alpha/callbacks/secret/").status_code
        == 404
    )
