"""No stranded builds: a build whose worker is SIGKILLed is taken over once its lease expires."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings
from django_tenants.utils import schema_context

from cadence_site.testing import celery_worker_argv, test_database_url
from orchestrators.models import OrchestratorInstance

BASE_DIR = Path(__file__).resolve().parents[2]


class _Endpoint(BaseHTTPRequestHandler):
    """An OpenAI-compatible /models that hangs while `hang` is set (a build stuck mid-probe)."""

    hang = threading.Event()

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.hang.is_set():
            time.sleep(30)
            return
        body = b'{"object": "list", "data": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Endpoint.hang.set()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    _Endpoint.hang.clear()
    server.shutdown()


def _worker(queue: str) -> subprocess.Popen:
    env = dict(
        os.environ,
        DATABASE_URL=test_database_url(),
        REDIS_URL=settings.REDIS_URL,
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        CADENCE_BUILD_LEASE_SECONDS="3",
        CADENCE_EGRESS_ALLOWED_HOSTS="127.0.0.1",
        CADENCE_TESTING="1",
    )
    return subprocess.Popen(celery_worker_argv(queue, loglevel="WARNING"), cwd=BASE_DIR, env=env)


def _instance(instance_id) -> OrchestratorInstance:
    with schema_context("org_alpha"):
        return OrchestratorInstance.objects.get(pk=instance_id)


def _wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def hanging_build(world, committed_db, endpoint):
    from orchestrators.models import LLMConfig
    from orchestrators.services import llm_config_create

    slug = "leasebot"

    def cleanup():
        with schema_context("org_alpha"):
            OrchestratorInstance.objects.filter(slug=slug).delete()
            LLMConfig.objects.filter(name="lease-endpoint").delete()

    cleanup()
    with override_settings(CADENCE_EGRESS_ALLOWED_HOSTS=["127.0.0.1"]), schema_context("org_alpha"):
        config = llm_config_create(
            name="lease-endpoint",
            provider="openai_compatible",
            base_url=endpoint,
            model="m",
            api_key="sk-test-lease",
        )
        # Created as the services do (status building, hash set), without enqueuing its build:
        # the test enqueues it on its own queue.
        from orchestrators.services import config_hash

        instance = OrchestratorInstance(slug=slug, name="Leasebot", llm_config=config)
        instance.status = OrchestratorInstance.Status.BUILDING
        instance.config_hash = config_hash(instance)
        instance.save()
    yield instance
    cleanup()


def test_a_build_whose_worker_is_killed_is_taken_over_after_its_lease(hanging_build):
    from orchestrators.tasks import builds_sweep, orchestrator_build

    queue = f"test-builds-{uuid.uuid4().hex[:8]}"
    instance = hanging_build
    first = _worker(queue)
    second = None
    try:
        orchestrator_build.apply_async(
            ("org_alpha", str(instance.id), instance.config_hash), queue=queue
        )
        assert _wait(lambda: _instance(instance.id).build_lease_until is not None, 30)
        claimed = _instance(instance.id)
        first.kill()  # SIGKILL mid-build (the probe hangs)
        first.wait(timeout=10)
        assert claimed.status == OrchestratorInstance.Status.BUILDING
        assert claimed.build_owner.endswith(f":{first.pid}")

        _Endpoint.hang.clear()
        second = _worker(queue)
        started = time.monotonic()

        def ready() -> bool:
            # What the beat schedule does every 15 s, here once a second.
            time.sleep(0.9)
            builds_sweep(queue=queue)
            return _instance(instance.id).status == OrchestratorInstance.Status.READY

        # Generous: a worker takes 5-25 s to start on a loaded 2-core machine.
        assert _wait(ready, 120), _instance(instance.id).status
        taken_over_in = time.monotonic() - started
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                # SIGKILL: a graceful stop took 10 s on the AMQP broker (the worker's event loop
                # notices it only at its next wake-up), and the takeover is already proven.
                worker.kill()
                worker.wait(timeout=20)

    done = _instance(instance.id)
    assert (done.build_lease_until, done.build_owner) == (None, "")
    assert taken_over_in < 120  # against the broker's visibility timeout of an hour


def test_a_live_lease_is_not_taken_and_a_finished_build_is_not_redone(hanging_build):
    from orchestrators.tasks import build_claim, builds_stranded

    instance = hanging_build
    with schema_context("org_alpha"):
        assert build_claim(instance_id=instance.pk, expected_hash=instance.config_hash) is True
        assert build_claim(instance_id=instance.pk, expected_hash=instance.config_hash) is False
    assert (str(instance.pk), instance.config_hash) not in builds_stranded(schema_name="org_alpha")

    with schema_context("org_alpha"):
        OrchestratorInstance.objects.filter(pk=instance.pk).update(
            build_lease_until="2020-01-01T00:00:00Z"
        )
    assert (str(instance.pk), instance.config_hash) in builds_stranded(schema_name="org_alpha")

    with schema_context("org_alpha"):
        OrchestratorInstance.objects.filter(pk=instance.pk).update(
            status=OrchestratorInstance.Status.READY, build_lease_until=None
        )
        # A redelivered message for a build already done claims nothing.
        assert build_claim(instance_id=instance.pk, expected_hash=instance.config_hash) is False
