"""An alert fires within 5 s of its cause on a real Celery worker process, and a failed delivery
is retried with backoff by that worker."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from django_tenants.utils import schema_context

from cadence_site.testing import celery_worker_argv, test_database_url
from cadence_site.webhooks import signature_valid
from engine.alerts.models import AlertEvent
from engine.models import RunLog

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def _alert_worker_process(django_db_setup, django_db_blocker):
    """One worker for the module, on a queue of its own, started and ready before the first test
    goes on (each test waits for its own deliveries to settle, so none is left for the next).
    Stopped with SIGKILL: Celery's warm and cold shutdowns (SIGTERM, SIGQUIT) both took 10-13 s
    here (on the AMQP broker the worker's event loop notices the stop only at its next wake-up),
    and a worker's shutdown is not what this module tests."""
    from django.conf import settings

    queue = f"alerts-{uuid.uuid4().hex[:8]}"
    with django_db_blocker.unblock():
        database = test_database_url()
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CADENCE_TESTING": "1",
        "CADENCE_ALERTS_QUEUE": queue,
        "CADENCE_EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8",
        "CADENCE_ALERT_RETRY_BASE_SECONDS": "0.5",
    }
    process = subprocess.Popen(
        celery_worker_argv(queue, loglevel="INFO"),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = threading.Event()

    def watch():
        for line in process.stderr:
            if " ready." in line:
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert ready.wait(90), "the worker did not start"
        yield queue, process
    finally:
        process.kill()
        process.wait(timeout=20)


@pytest.fixture
def alert_worker(settings, _alert_worker_process):
    """The module's worker, alive, with this process publishing alert tasks to its queue."""
    queue, process = _alert_worker_process
    assert process.poll() is None, f"the module's worker exited with {process.returncode}"
    settings.CADENCE_ALERTS_QUEUE = queue
    return queue


@pytest.mark.usefixtures("clean_rules")
def test_an_alert_reaches_its_webhook_within_5_s_and_a_failed_delivery_is_retried(
    world, flaky, openai_server, as_key, receiver, make_rule, alert_worker
):
    rule = make_rule(kind="run_failed", webhook_url=receiver.url)
    receiver.statuses = [503]  # the first delivery fails; the worker retries it
    openai_server.error(500, message="boom")

    response = as_key(world.alpha.keys["member"]).post(
        f"/api/v1/orgs/alpha/orchestrators/{flaky.id}/invoke/",
        {"messages": [{"role": "user", "content": "hi"}]},
        format="json",
    )
    caused = time.monotonic()

    assert response.status_code == 502
    assert receiver.arrived.wait(5), "no alert within 5 s of the failed run"
    first = time.monotonic() - caused
    deadline = time.monotonic() + 30
    while len(receiver.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [status for _, _, status in receiver.received] == [503, 200]
    (headers, body, _), (retried_headers, retried_body, _) = receiver.received
    assert retried_body == body
    assert retried_headers["X-Cadence-Event"] == headers["X-Cadence-Event"]
    assert signature_valid(rule.secret, retried_body, retried_headers["X-Cadence-Signature"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with schema_context("org_alpha"):
            event = AlertEvent.objects.get(rule=rule)
        if event.webhook_status == "delivered":
            break
        time.sleep(0.05)
    assert (event.webhook_status, event.webhook_attempts) == ("delivered", 2)
    assert first < 5


@pytest.mark.usefixtures("clean_rules")
def test_a_log_line_alert_reaches_its_webhook_within_5_s_of_the_line(
    world, flaky, openai_server, as_key, receiver, make_rule, alert_worker
):
    rule = make_rule(
        kind="log_match", pattern=r"llm call failed: code=\w+", webhook_url=receiver.url
    )
    openai_server.error(500, message="boom")

    response = as_key(world.alpha.keys["member"]).post(
        f"/api/v1/orgs/alpha/orchestrators/{flaky.id}/invoke/",
        {"messages": [{"role": "user", "content": "hi"}]},
        format="json",
    )

    assert response.status_code == 502
    assert receiver.arrived.wait(5), "no alert within 5 s of the run's log line"
    arrived = time.time()
    with schema_context("org_alpha"):
        event = AlertEvent.objects.get(rule=rule)
        line = RunLog.objects.get(run_id=event.run_id, message__startswith="llm call failed")
    assert event.details["where"].startswith(f"log {line.cursor} (warning, ")
    assert arrived - line.at.timestamp() < 5
