"""Exclusive sections declared in a flow: two worker processes racing on one key never run the
step at the same time (on two keys they do), a lost lease fails the step, and the flow form
refuses a bad key template naming where it is."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid

import pytest
from django_tenants.utils import schema_context

from cadence_site.errors import ApplicationError
from cadence_site.testing import test_database_url
from engine.durable import services
from engine.durable.locking import ExclusiveSections, section_lease
from engine.durable.models import QueuedRun
from engine.durable.tests.crash_harness import REPO, worker_env
from engine.errors import CadenceError
from engine.flow import build_cadence, validate_flow
from engine.models import Run

WORDS = " ".join(f"w{i}" for i in range(30))  # 30 words at 20 ms: the step takes 0.6 s
FLOW = {
    "name": "guarded",
    "steps": [
        {"then": "prepare_prompt"},
        {"then": "agent", "exclusive": "customer:{input.customer_id}"},
        {"then": "finalize"},
    ],
}


@pytest.fixture
def guarded(world, committed_db):
    from orchestrators.models import LLMConfig, OrchestratorInstance
    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build

    def cleanup():
        with schema_context("org_alpha"):
            OrchestratorInstance.objects.filter(slug="guarded").delete()
            LLMConfig.objects.filter(name="guarded-llm").delete()

    cleanup()
    with schema_context("org_alpha"):
        llm = llm_config_create(
            name="guarded-llm", provider="offline", model="cadence-offline@20ms"
        )
        instance = orchestrator_create(slug="guarded", name="Guarded", llm_config=llm, flow=FLOW)
    assert instance_build(
        schema_name="org_alpha", instance_id=str(instance.id), expected_hash=instance.config_hash
    ) == "ready"  # fmt: skip
    yield instance
    cleanup()


def _race(instance, customers: list[str]) -> list[tuple[float, float]]:
    """One run per customer id, each on its own worker process, started at once; the time span
    of each run's guarded step."""
    go = f"cadence:test:go:{uuid.uuid4().hex}"
    ids = []
    with schema_context("org_alpha"):
        for customer in customers:
            queued, _ = services.queued_run_enqueue(
                instance=instance,
                message=json.dumps({"customer_id": customer, "text": WORDS}),
                idempotency_key=uuid.uuid4().hex,
            )
            ids.append(str(queued.run_id))
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "engine.durable.tests.resume_worker", "org_alpha", run_id, go],
            cwd=REPO,
            env=worker_env(database_url=test_database_url()),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for run_id in ids
    ]
    client = services._redis()
    try:
        # Every racer set up and waiting (each says so), then the go: a fixed 3 s wait was both
        # too long on an idle machine and too short for a process's start-up on a loaded one.
        # (Blocking reads of 1 s: the client's socket times out after 5.)
        deadline = time.monotonic() + 60
        waiting = len(workers)
        while waiting:
            assert time.monotonic() < deadline, "a racer did not start in 60 s"
            waiting -= client.blpop([f"{go}:ready"], timeout=1) is not None
        client.rpush(go, *["go"] * len(workers))
        for worker in workers:
            assert worker.wait(timeout=60) == 0
    finally:
        client.delete(go, f"{go}:ready")
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    spans = []
    with schema_context("org_alpha"):
        for run_id in ids:
            assert QueuedRun.objects.get(pk=run_id).state == "succeeded"
            # the model call inside the guarded step (the step's own span includes its wait)
            step = Run.objects.get(pk=run_id).events.get(kind="llm_call")
            spans.append((step.started_at.timestamp(), step.at.timestamp()))
    return sorted(spans)


def test_two_workers_racing_on_one_key_run_the_step_one_after_the_other(guarded, queue_name):
    (a_start, a_end), (b_start, b_end) = _race(guarded, ["c-1", "c-1"])
    assert b_start >= a_end  # never at the same time


def test_on_two_keys_the_step_runs_at_the_same_time(guarded, queue_name):
    (a_start, a_end), (b_start, b_end) = _race(guarded, ["c-1", "c-2"])
    assert b_start < a_end  # the lock, not the timing, kept the first race apart


def test_a_lost_lease_stops_and_fails_the_step(world, settings):
    settings.CADENCE_LOCK_LEASE_SECONDS = 0.3
    sections = ExclusiveSections(
        schema_name="org_alpha", message='{"customer_id": "c-9"}', run_id="r1"
    )
    finished = []

    async def body():
        lease = section_lease.get()
        # Another holder takes over (the lease expired during a pause, say).
        services._redis().delete(f"cadence:lock:org_alpha:{lease.key}")
        await asyncio.sleep(2)
        finished.append(True)

    started = time.monotonic()
    with pytest.raises(ApplicationError) as caught:
        asyncio.run(sections("customer:{input.customer_id}", body))
    assert caught.value.code == "lock_lost" and finished == []
    assert time.monotonic() - started < 1.0


def test_a_key_whose_input_field_is_missing_fails_the_step(world):
    sections = ExclusiveSections(schema_name="org_alpha", message="not json", run_id="r1")

    async def body():
        raise AssertionError("ran unguarded")

    with pytest.raises(ApplicationError) as caught:
        asyncio.run(sections("customer:{input.customer_id}", body))
    assert caught.value.code == "lock_key_invalid"
    assert "input.customer_id" in caught.value.message


def test_the_flow_form_refuses_a_bad_exclusive_key_naming_its_path():
    from orchestrators.adapters.cadence import agent_notes

    def issues(template):
        flow = {
            "name": "f",
            "steps": [{"then": "prepare_prompt"}, {"then": "agent", "exclusive": template}],
        }
        return [(i.path, i.code, i.message) for i in validate_flow(flow, agent_notes())]

    assert issues("customer:{input.customer_id}") == []
    assert issues("conv:{conversation_id}:{run_id}") == []
    [(path, code, message)] = issues("customer:{customer_id}")
    assert (path, code) == ("/steps/1/exclusive", "invalid_exclusive")
    assert "{customer_id}" in message
    assert issues("customer:{input.id")[0][:2] == ("/steps/1/exclusive", "invalid_exclusive")
    assert issues("")[0][0] == "/steps/1/exclusive"
    assert issues("x" * 201)[0][0] == "/steps/1/exclusive"


def test_an_exclusive_step_without_a_lock_service_does_not_run():
    from orchestrators.adapters.cadence import AgentScore, agent_notes

    cadence = build_cadence(
        {"name": "f", "steps": [{"then": "finalize", "exclusive": "k:{run_id}"}]}, agent_notes()
    )
    with pytest.raises(CadenceError) as caught:
        asyncio.run(cadence.run(AgentScore()))
    assert "no lock service" in str(caught.value)
