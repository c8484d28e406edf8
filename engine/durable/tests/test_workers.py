"""Queued runs on workers: one claim wins, runs run their snapshot and are proven, organizations
are served in turn, failures become dead letters that replay."""

from __future__ import annotations

import uuid

from django_tenants.utils import schema_context

from engine.durable import fairqueue, services
from engine.durable.models import QueuedRun
from engine.durable.tasks import run_next, run_one
from engine.models import Run
from engine.trust import signing
from engine.trust.bundle import bundle_build
from engine.trust.models import ExecutionProof
from engine.trust.verify_bundle import verify_bundle


def _enqueue(instance, message="hello", schema="org_alpha", **kwargs):
    with schema_context(schema):
        queued, created = services.queued_run_enqueue(
            instance=instance, message=message, idempotency_key=uuid.uuid4().hex, **kwargs
        )
    assert created
    return str(queued.run_id)


def _state(run_id, schema="org_alpha"):
    with schema_context(schema):
        queued = QueuedRun.objects.select_related("run").get(pk=run_id)
        return queued.state, queued.run.status, queued.attempts, queued.reason


def test_a_queued_run_runs_once_on_a_worker_and_is_proven(chat_orchestrator, queue_name):
    run_id = _enqueue(chat_orchestrator["fast"], "2+3?")
    assert run_next(queue=queue_name) == "succeeded"
    assert _state(run_id)[:3] == ("succeeded", "succeeded", 1)
    assert run_next(queue=queue_name) is None  # the queue is empty
    assert run_one(schema_name="org_alpha", run_id=run_id) is None  # a duplicate message: no-op
    with schema_context("org_alpha"):
        run = Run.objects.get(pk=run_id)
        assert run.output == "Offline model. You said: 2+3?"
        bundle = bundle_build(run=run, proof=ExecutionProof.objects.get(run_id=run_id))
    assert verify_bundle(bundle, signing.keyring().verifiers).failures == []
    assert bundle["run"]["trigger"] == "queue"


def test_of_two_workers_claiming_one_run_exactly_one_wins(chat_orchestrator, queue_name):
    run_id = _enqueue(chat_orchestrator["fast"])
    with schema_context("org_alpha"):
        first = services.queued_run_claim(run_id=run_id)
        second = services.queued_run_claim(run_id=run_id)
    assert first is not None and second is None


def test_a_run_whose_worker_died_is_claimed_again_once_its_lease_expires(
    chat_orchestrator, queue_name
):
    import datetime as dt

    from django.utils import timezone

    run_id = _enqueue(chat_orchestrator["fast"])
    with schema_context("org_alpha"):
        assert services.queued_run_claim(run_id=run_id) is not None
        Run.objects.filter(pk=run_id).update(status="running")  # the dead worker's turn began
        assert services.queued_run_claim(run_id=run_id) is None  # its lease still holds
        QueuedRun.objects.filter(pk=run_id).update(
            lease_until=timezone.now() - dt.timedelta(seconds=1)
        )
        assert services.queued_run_orphans() == [run_id]
    assert run_one(schema_name="org_alpha", run_id=run_id) == "succeeded"
    assert _state(run_id)[:3] == ("succeeded", "succeeded", 2)


def test_a_run_runs_its_snapshot_even_after_the_orchestrator_changed(chat_orchestrator, queue_name):
    from orchestrators.services import orchestrator_update
    from orchestrators.tasks import instance_build

    instance = chat_orchestrator["fast"]
    run_id = _enqueue(instance)
    with schema_context("org_alpha"):
        pinned = Run.objects.get(pk=run_id).snapshot_id
        changed = orchestrator_update(instance=instance, system_prompt="Now in French.")
    assert (
        instance_build(
            schema_name="org_alpha", instance_id=str(instance.id), expected_hash=changed.config_hash
        )
        == "ready"
    )
    assert run_next(queue=queue_name) == "succeeded"
    with schema_context("org_alpha"):
        run = Run.objects.get(pk=run_id)
        assert run.snapshot_id == pinned
        assert run.snapshot.value["system_prompt"] != "Now in French."
        assert ExecutionProof.objects.get(run_id=run_id).payload["snapshot"] == pinned


def test_a_failing_run_becomes_a_dead_letter_with_its_reason_and_replays(
    chat_orchestrator, queue_name
):
    from orchestrators.models import OrchestratorInstance

    instance = chat_orchestrator["fast"]
    run_id = _enqueue(instance)
    with schema_context("org_alpha"):
        OrchestratorInstance.objects.filter(pk=instance.pk).update(status="suspended")
    assert run_next(queue=queue_name) == "dead"
    state, status, attempts, reason = _state(run_id)
    assert (state, status, attempts) == ("dead", "failed", 1)
    assert reason.startswith("orchestrator_suspended")
    with schema_context("org_alpha"):
        OrchestratorInstance.objects.filter(pk=instance.pk).update(status="ready")
        replay = services.dead_letter_replay(queued=QueuedRun.objects.get(pk=run_id))
    replay_id = str(replay.run_id)
    assert run_one(schema_name="org_alpha", run_id=replay_id) == "succeeded"
    assert _state(run_id)[0] == "discarded"
    with schema_context("org_alpha"):
        again = QueuedRun.objects.select_related("run").get(pk=replay_id)
        assert (str(again.replay_of), again.run.snapshot_id) == (
            run_id,
            Run.objects.get(pk=run_id).snapshot_id,
        )


def test_a_run_past_its_deadline_is_a_dead_letter_without_running(chat_orchestrator, queue_name):
    import datetime as dt

    from django.utils import timezone

    run_id = _enqueue(
        chat_orchestrator["fast"], deadline=timezone.now() + dt.timedelta(milliseconds=200)
    )
    import time

    time.sleep(0.3)
    assert run_next(queue=queue_name) == "dead"
    assert _state(run_id)[3] == "deadline passed"


def test_one_organizations_burst_does_not_starve_another(queue_name):
    """Fairness: organizations are served in turn, whatever the order of arrival."""
    client = services._redis()
    for i in range(50):
        fairqueue.push(client, queue=queue_name, schema_name="org_alpha", run_id=f"a{i}")
    fairqueue.push(client, queue=queue_name, schema_name="org_bravo", run_id="b0")
    served = [fairqueue.pop(client, queue=queue_name) for _ in range(4)]
    assert served == [
        ("org_alpha", "a0"),
        ("org_bravo", "b0"),
        ("org_alpha", "a1"),
        ("org_alpha", "a2"),
    ]
    rest = []
    while (item := fairqueue.pop(client, queue=queue_name)) is not None:
        rest.append(item[1])
    assert rest == [f"a{i}" for i in range(3, 50)]


def test_an_organization_with_its_own_queue_is_served_only_by_its_workers(settings):
    settings.CADENCE_ORG_QUEUES = {"bravo": "bravo-own"}
    assert fairqueue.queue_for("bravo") == "bravo-own"
    assert fairqueue.queue_for("alpha") == fairqueue.SHARED_QUEUE
    client = services._redis()
    try:
        fairqueue.push(client, queue="bravo-own", schema_name="org_bravo", run_id="b1")
        assert fairqueue.pop(client, queue=f"shared-{uuid.uuid4().hex}") is None
        assert fairqueue.pop(client, queue="bravo-own") == ("org_bravo", "b1")
    finally:
        client.delete("cadence:runq:bravo-own:ring", "cadence:runq:bravo-own:org:org_bravo")
