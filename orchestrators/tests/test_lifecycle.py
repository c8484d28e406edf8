"""Lifecycle across real processes: a change made here is served by another server process within 2 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django_tenants.utils import schema_context

from cadence_site.testing import start_live_server, test_database_url
from orchestrators import lifecycle
from orchestrators.models import LLMConfig, OrchestratorInstance
from orchestrators.tasks import instance_build

ROOT = Path(__file__).resolve().parents[2]
RABBITMQ_URL = os.environ.get("CADENCE_RABBITMQ_URL") or "amqp://guest:guest@127.0.0.1:5672//"


def _rabbitmq_reachable() -> bool:
    from kombu import Connection

    try:
        with Connection(RABBITMQ_URL, connect_timeout=1) as conn:
            conn.ensure_connection(max_retries=1, timeout=1)
        return True
    except Exception:
        return False


TRANSPORTS = [
    pytest.param("redis", id="redis-only"),
    pytest.param(
        "rabbitmq",
        id="rabbitmq",
        marks=pytest.mark.skipif(
            not _rabbitmq_reachable(), reason=f"RabbitMQ not reachable at {RABBITMQ_URL}"
        ),
    ),
]


@pytest.fixture
def instance(world, committed_db):
    from orchestrators.services import llm_config_create, orchestrator_create

    with schema_context("org_alpha"):
        OrchestratorInstance.objects.filter(slug="lifecycle").delete()
        LLMConfig.objects.filter(name="lifecycle").delete()
        config = llm_config_create(name="lifecycle", provider="offline", model="m")
        created = orchestrator_create(slug="lifecycle", name="Lifecycle", llm_config=config)
    instance_build(
        schema_name="org_alpha", instance_id=str(created.id), expected_hash=created.config_hash
    )
    yield created
    with schema_context("org_alpha"):
        OrchestratorInstance.objects.filter(slug="lifecycle").delete()
        LLMConfig.objects.filter(name="lifecycle").delete()


def _invoke(port: int, key: str, instance_id: str) -> dict:
    body = json.dumps({"messages": [{"role": "user", "content": "which version?"}]}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/orgs/alpha/orchestrators/{instance_id}/invoke/",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_another_process_serves_the_new_version_within_two_seconds(
    world, instance, transport, settings
):
    from orchestrators.services import orchestrator_update

    settings.CADENCE_RABBITMQ_URL = RABBITMQ_URL if transport == "rabbitmq" else ""
    server = start_live_server(
        test_database_url(),
        **({"CADENCE_RABBITMQ_URL": RABBITMQ_URL} if transport == "rabbitmq" else {}),
    )
    port = server.port
    try:
        before = _invoke(port, world.alpha.keys["member"], str(instance.id))
        assert before["orchestrator"]["config_hash"] == instance.config_hash

        with schema_context("org_alpha"):
            changed = orchestrator_update(
                instance=OrchestratorInstance.objects.get(pk=instance.pk),
                system_prompt=f"Version via {transport}.",
            )
        changed_at = time.monotonic()
        assert (
            instance_build(
                schema_name="org_alpha",
                instance_id=str(instance.id),
                expected_hash=changed.config_hash,
            )
            == "ready"
        )

        served = None
        while time.monotonic() - changed_at < 2.0:
            served = _invoke(port, world.alpha.keys["member"], str(instance.id))["orchestrator"]
            if served["config_hash"] == changed.config_hash:
                break
            time.sleep(0.05)
        assert served is not None and served["config_hash"] == changed.config_hash
        assert served["version"] == changed.version
    finally:
        server.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_events_published_by_another_process_reach_a_listener(settings, transport):
    settings.CADENCE_RABBITMQ_URL = RABBITMQ_URL if transport == "rabbitmq" else ""
    received: list[dict] = []
    listener = lifecycle.Listener(received.append)
    listener.start()
    try:
        assert listener.ready.wait(5), "listener did not connect"
        env = dict(
            os.environ,
            CADENCE_TESTING="1",
            REDIS_URL=settings.REDIS_URL,
            DATABASE_URL=os.environ.get("DATABASE_URL", ""),
        )
        env.pop("CADENCE_RABBITMQ_URL", None)
        if transport == "rabbitmq":
            env["CADENCE_RABBITMQ_URL"] = RABBITMQ_URL
        code = "import django; django.setup(); from orchestrators import lifecycle; assert lifecycle.announce(schema_name='org_x', instance_id='i-1', config_hash='h-1', action='rebuild')"
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=dict(env, DJANGO_SETTINGS_MODULE="cadence_site.settings"),
            check=True,
            timeout=60,
        )
        # Pub/sub channels span Redis's databases (and the fanout spans every process): other
        # test processes on the same server (pytest-xdist's workers, another checkout's suite)
        # announce their own organizations' events meanwhile; this one's is org_x's.
        deadline = time.monotonic() + 5
        while not _ours(received) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        listener.stop()
        listener.join(timeout=5)

    assert _ours(received) == [("org_x", "i-1", "h-1", "rebuild")]


def _ours(received: list[dict]) -> list[tuple]:
    return [
        (e["schema"], e["id"], e["hash"], e["action"]) for e in received if e["schema"] == "org_x"
    ]


def test_a_repeated_event_is_a_no_op_and_a_new_hash_drops_the_runtime():
    from orchestrators.pool import Entry, RuntimePool

    pool = RuntimePool(warm_max=4)
    pool._entries[("org_a", "i")] = Entry(
        runtime=object(), config_hash="h1", tier="warm", slug="s", version=1, built_at=0
    )

    pool.apply({"schema": "org_a", "id": "i", "hash": "h1", "action": "rebuild"})
    assert ("org_a", "i") in pool._entries
    pool.apply({"schema": "org_a", "id": "i", "hash": "h2", "action": "rebuild"})
    assert ("org_a", "i") not in pool._entries
