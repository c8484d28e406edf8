"""The per-run retry policy: retryable failures wait an exponential backoff with jitter and run
again (resuming after the last checkpoint), others and exhausted runs become dead letters with
their reason and last step; the deadline bounds retries and cancels a run that outlives it; a
dead letter replays from the start or from the failed step."""

from __future__ import annotations

import time
import uuid

from django.utils import timezone
from django_tenants.utils import schema_context

from engine.durable import services
from engine.durable.models import QueuedRun, RunCheckpoint
from engine.durable.tasks import run_one
from engine.models import Run
from engine.trust.models import ExecutionProof


def _enqueue(instance, message="hello", **kwargs) -> str:
    with schema_context("org_alpha"):
        queued, _ = services.queued_run_enqueue(
            instance=instance, message=message, idempotency_key=uuid.uuid4().hex, **kwargs
        )
    return str(queued.run_id)


def _queued(run_id: str) -> QueuedRun:
    with schema_context("org_alpha"):
        return QueuedRun.objects.select_related("run").get(pk=run_id)


def _steps(run_id: str) -> list[tuple[str, str]]:
    with schema_context("org_alpha"):
        return list(
            Run.objects.get(pk=run_id).events.order_by("seq").values_list("name", "outcome")
        )


def _proofs(run_id: str) -> int:
    with schema_context("org_alpha"):
        return ExecutionProof.objects.filter(run_id=run_id).count()


def _when_due(run_id: str) -> None:
    wait = (_queued(run_id).not_before - timezone.now()).total_seconds()
    time.sleep(max(wait, 0) + 0.01)


def test_retry_delay_doubles_with_jitter_and_is_capped():
    for attempts, step in [(1, 2.0), (2, 4.0), (3, 8.0), (9, 60.0)]:
        delays = [services.retry_delay(attempts=attempts, backoff=2, cap=60) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert len(set(delays)) > 100  # jittered


def test_a_model_5xx_is_retried_after_a_backoff_and_the_run_succeeds(
    flaky, openai_server, queue_name
):
    openai_server.error(503)
    openai_server.reply("second time lucky")
    run_id = _enqueue(flaky, backoff_seconds=2)
    assert run_one(schema_name="org_alpha", run_id=run_id) == "queued"
    queued = _queued(run_id)
    assert queued.reason.startswith("attempt 1 failed, retrying: llm_unavailable")
    assert queued.run.status == "queued" and _proofs(run_id) == 0  # not final: not proven
    # backoff 2 s after the first attempt: between 1 and 2 s after it failed
    assert 0.99 <= (queued.not_before - queued.updated_at).total_seconds() <= 2.0
    # Not before its time: a worker that takes it early leaves it.
    assert run_one(schema_name="org_alpha", run_id=run_id) is None
    _when_due(run_id)
    assert run_one(schema_name="org_alpha", run_id=run_id) == "succeeded"
    queued = _queued(run_id)
    assert (queued.attempts, queued.run.status, queued.run.output) == (
        2, "succeeded", "second time lucky",
    )  # fmt: skip
    steps = _steps(run_id)
    # The first attempt's failed model call is kept; prepare_prompt (checkpointed) ran once.
    assert [n for n, _ in steps].count("prepare_prompt") == 1
    assert ("llm_call", "failed") in steps and ("llm_call", "completed") in steps
    assert _proofs(run_id) == 1


def test_an_error_a_retry_cannot_fix_is_a_dead_letter_at_once(flaky, openai_server, queue_name):
    openai_server.error(400)
    run_id = _enqueue(flaky)
    assert run_one(schema_name="org_alpha", run_id=run_id) == "dead"
    queued = _queued(run_id)
    assert queued.attempts == 1 and queued.reason.startswith("llm_bad_request")
    assert queued.reason.endswith("(last step: llm_call)")
    assert _proofs(run_id) == 1  # final: proven


def test_retries_end_in_a_dead_letter_when_attempts_run_out(flaky, openai_server, queue_name):
    openai_server.error(429, retry_after="0")
    openai_server.error(429, retry_after="0")
    run_id = _enqueue(flaky, max_attempts=2, backoff_seconds=0.1)
    assert run_one(schema_name="org_alpha", run_id=run_id) == "queued"
    _when_due(run_id)
    assert run_one(schema_name="org_alpha", run_id=run_id) == "dead"
    queued = _queued(run_id)
    assert (queued.attempts, queued.run.status) == (2, "failed")
    assert queued.reason.startswith("llm_rate_limited")


def test_no_retry_is_scheduled_past_the_deadline(flaky, openai_server, queue_name):
    openai_server.error(503)
    run_id = _enqueue(
        flaky, backoff_seconds=60, deadline=timezone.now() + timezone.timedelta(seconds=20)
    )
    assert run_one(schema_name="org_alpha", run_id=run_id) == "dead"
    assert "no retry could start before the deadline" in _queued(run_id).reason


def test_a_run_still_running_at_its_deadline_is_cancelled(chat_orchestrator, queue_name):
    run_id = _enqueue(
        chat_orchestrator["slow"],  # 60 ms a word
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen",
        deadline=timezone.now() + timezone.timedelta(milliseconds=400),
    )
    started = time.monotonic()
    assert run_one(schema_name="org_alpha", run_id=run_id) == "dead"
    assert time.monotonic() - started < 1.0
    queued = _queued(run_id)
    assert queued.reason.startswith("deadline_exceeded")
    assert queued.run.status == "cancelled" and _proofs(run_id) == 1


def test_a_dead_letter_replays_from_the_failed_step(flaky, openai_server, queue_name):
    openai_server.error(400)
    run_id = _enqueue(flaky)
    assert run_one(schema_name="org_alpha", run_id=run_id) == "dead"
    with schema_context("org_alpha"):
        checkpoint = RunCheckpoint.objects.get(run_id=run_id)
        assert (checkpoint.measure_name, checkpoint.steps) == ("prepare_prompt", 1)
        replay = services.dead_letter_replay(
            queued=QueuedRun.objects.get(pk=run_id), from_failed_step=True
        )
    replay_id = str(replay.run_id)
    assert _steps(replay_id) == [("prepare_prompt", "completed")]  # kept from the dead run
    openai_server.reply("fixed")
    asked = len(openai_server.requests)
    assert run_one(schema_name="org_alpha", run_id=replay_id) == "succeeded"
    assert len(openai_server.requests) == asked + 1
    steps = [n for n, _ in _steps(replay_id)]
    assert steps.count("prepare_prompt") == 1 and steps[:2] == ["prepare_prompt", "agent"]
    assert _queued(replay_id).run.output == "fixed" and _queued(run_id).state == "discarded"


def test_a_dead_letter_replays_from_the_start_over_rest(world, as_key, flaky, openai_server,
                                                          queue_name):  # fmt: skip
    openai_server.error(400)
    run_id = _enqueue(flaky)
    assert run_one(schema_name="org_alpha", run_id=run_id) == "dead"
    admin = as_key(world.alpha.keys["admin"])
    url = f"/api/v1/orgs/alpha/dead-letters/{run_id}/replay/"
    bad = admin.post(url, {"replay_from": "middle"}, format="json")
    assert bad.status_code == 400 and _queued(run_id).state == "dead"
    assert admin.post(url, {"replay_from": "start", "x": 1}, format="json").status_code == 400
    done = admin.post(url, {"replay_from": "start"}, format="json")
    assert done.status_code == 202
    assert _steps(done.json()["id"]) == []  # from the start: nothing kept


def test_a_worker_that_died_during_the_last_attempt_leaves_a_dead_letter(
    chat_orchestrator, queue_name
):
    import datetime as dt

    from engine.durable.tasks import orphans_sweep

    run_id = _enqueue(chat_orchestrator["fast"], max_attempts=1)
    with schema_context("org_alpha"):
        assert services.queued_run_claim(run_id=run_id) is not None  # the worker that dies
        Run.objects.filter(pk=run_id).update(status="running")
        QueuedRun.objects.filter(pk=run_id).update(
            lease_until=timezone.now() - dt.timedelta(seconds=1)
        )
    orphans_sweep()
    queued = _queued(run_id)
    assert (queued.state, queued.run.status) == ("dead", "failed")
    assert queued.reason.startswith("worker_lost")
    assert run_one(schema_name="org_alpha", run_id=run_id) is None  # nothing left to claim
