"""Rules judged against real runs of the turn pipeline, notifications to a local receiver and
Django's email backend, through the real task code (run here; test_worker.py uses a worker)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from cadence_site.webhooks import signature_valid
from engine.alerts import evaluate, services
from engine.alerts.models import AlertEvent, AlertRule
from engine.models import Run

pytestmark = pytest.mark.usefixtures("clean_rules")


def _invoke(api, instance, content: str):
    return api.post(
        f"/api/v1/orgs/alpha/orchestrators/{instance.id}/invoke/",
        {"messages": [{"role": "user", "content": content}]},
        format="json",
    )


def _events(rule: AlertRule) -> list[AlertEvent]:
    with schema_context("org_alpha"):
        return list(AlertEvent.objects.filter(rule=rule).order_by("created_at"))


def test_a_failed_run_fires_its_rules_signed_to_the_webhook_and_by_email(
    world, flaky, openai_server, as_key, receiver, queued, mailoutbox, make_rule
):
    failed = make_rule(kind="run_failed", webhook_url=receiver.url, emails=["ops@alpha.test"])
    step = make_rule(kind="step_failed", error_code="LLMError", emails=["ops@alpha.test"])
    logged = make_rule(
        kind="log_match", pattern=r"provider is (un)?available", webhook_url=receiver.url
    )
    other_code = make_rule(kind="run_failed", error_code="llm_timeout", emails=["x@alpha.test"])
    other_orch = make_rule(kind="run_failed", orchestrator="chatbot", emails=["x@alpha.test"])
    openai_server.error(500, message="boom")

    response = _invoke(as_key(world.alpha.keys["member"]), flaky, "hi")

    assert response.status_code == 502
    run_id = response.json()["error"]["details"].get("run") or _last_run_id("flaky")
    ran = queued()
    assert ran[0] == ("alerts.evaluate_run", {"schema_name": "org_alpha", "run_id": run_id})
    assert sorted(name for name, _ in ran[1:]) == ["alerts.deliver"] * 4

    (fired,) = _events(failed)
    assert (str(fired.run_id), fired.key, fired.details) == (
        run_id, f"run:{run_id}", {"error_code": "llm_unavailable"},
    )  # fmt: skip
    assert fired.reason.startswith("Run of flaky failed: llm_unavailable: ")
    assert (fired.webhook_status, fired.webhook_attempts) == ("delivered", 1)
    assert (fired.email_status, fired.email_attempts) == ("delivered", 1)
    (step_event,) = _events(step)
    assert [s["name"] for s in step_event.details["steps"]] == ["agent", "llm_call"]
    (log_event,) = _events(logged)
    assert log_event.details["match"] == "provider is unavailable"
    assert _events(other_code) == [] and _events(other_orch) == []

    bodies = {}
    for headers, body, _status in receiver.received:
        payload = json.loads(body)
        secret = failed.secret if payload["rule"]["id"] == str(failed.id) else logged.secret
        assert signature_valid(secret, body, headers["X-Cadence-Signature"])
        assert headers["X-Cadence-Event"] == payload["id"] == headers["Idempotency-Key"]
        bodies[payload["rule"]["kind"]] = payload
    assert bodies["run_failed"] == {
        "id": str(fired.id),
        "type": "alert",
        "organization": "alpha",
        "rule": {"id": str(failed.id), "name": "run_failed", "kind": "run_failed"},
        "run": run_id,
        "reason": fired.reason,
        "details": {"error_code": "llm_unavailable"},
        "created_at": fired.created_at.isoformat(),
    }
    assert sorted(m.subject.split(":")[0] for m in mailoutbox) == [
        "[Cadence alert] run_failed",
        "[Cadence alert] step_failed",
    ]
    assert f"Run: {run_id}" in mailoutbox[0].body
    assert all("sk-flaky-secret" not in m.body for m in mailoutbox)
    assert all(b"sk-flaky-secret" not in body for _, body, _ in receiver.received)


def _last_run_id(slug: str) -> str:
    with schema_context("org_alpha"):
        return str(Run.objects.filter(orchestrator_slug=slug).latest("started_at").id)


def test_slow_runs_and_steps_and_tokens_fire_on_a_successful_run(
    world, chat_orchestrator, as_key, queued, make_rule
):
    slow_run = make_rule(kind="slow_run", threshold_ms=0, emails=["a@alpha.test"])
    slow_step = make_rule(kind="slow_step", threshold_ms=0, emails=["a@alpha.test"])
    never = make_rule(kind="slow_run", threshold_ms=3_600_000, emails=["a@alpha.test"])
    tokens = make_rule(
        kind="tokens_over", window_seconds=3600, tokens=0, orchestrator="chatbot",
        emails=["a@alpha.test"],
    )  # fmt: skip
    failures = make_rule(kind="run_failed", emails=["a@alpha.test"])

    body = _invoke(as_key(world.alpha.keys["member"]), chat_orchestrator["fast"], "hi").json()
    queued()

    (event,) = _events(slow_run)
    assert event.run_id == uuid.UUID(body["run"])
    assert event.details["threshold_ms"] == 0
    (event,) = _events(slow_step)
    assert {s["name"] for s in event.details["steps"]} >= {"prepare_prompt", "agent"}
    (event,) = _events(tokens)
    assert event.key.startswith("window:") and event.run_id is None
    assert event.details["tokens"] >= body["usage"]["total_tokens"] > 0
    assert _events(never) == [] and _events(failures) == []


def test_a_run_on_an_outdated_definition_fires_the_drift_rule(
    world, chat_orchestrator, queue_name, queued, make_rule
):
    from engine.durable import services as durable
    from engine.durable.tasks import run_next
    from orchestrators.services import orchestrator_update
    from orchestrators.tasks import instance_build

    drift = make_rule(kind="drift", emails=["a@alpha.test"])
    instance = chat_orchestrator["fast"]
    with schema_context("org_alpha"):
        queued_run, _ = durable.queued_run_enqueue(
            instance=instance, message="hello", idempotency_key=uuid.uuid4().hex
        )
    assert run_next(queue=queue_name) == "succeeded"
    queued()
    assert _events(drift) == []  # it ran the orchestrator's current definition

    with schema_context("org_alpha"):
        pinned, _ = durable.queued_run_enqueue(
            instance=instance, message="hello", idempotency_key=uuid.uuid4().hex
        )
        changed = orchestrator_update(instance=instance, system_prompt="Now in French.")
    instance_build(
        schema_name="org_alpha", instance_id=str(instance.id), expected_hash=changed.config_hash
    )
    assert run_next(queue=queue_name) == "succeeded"  # on its pinned, older snapshot
    queued()

    (event,) = _events(drift)
    assert event.run_id == pinned.run_id
    (change,) = event.details["changes"]
    assert (change["area"], change["path"], change["after"]) == (
        "prompts", "system_prompt", "Now in French.",
    )  # fmt: skip
    assert "(prompts)" in event.reason


def test_a_cause_fires_a_rule_once_and_a_delivered_webhook_is_not_sent_again(
    world, chat_orchestrator, as_key, receiver, queued, make_rule
):
    rule = make_rule(kind="slow_run", threshold_ms=0, webhook_url=receiver.url)
    body = _invoke(as_key(world.alpha.keys["member"]), chat_orchestrator["fast"], "hi").json()
    queued()

    with schema_context("org_alpha"):
        assert services.alerts_for_run(run_id=body["run"]) == []  # judged again: nothing new
        (event,) = AlertEvent.objects.filter(rule=rule)
        assert services.alert_deliver(event_id=str(event.id), target="webhook") == "delivered"
    assert len(receiver.received) == 1


def test_failed_deliveries_are_retried_then_given_up_and_refused_addresses_are_not_retried(
    world, committed_db, receiver, make_rule, settings
):
    rule = make_rule(kind="run_failed", webhook_url=receiver.url)
    receiver.statuses = [503, 503, 500]
    with schema_context("org_alpha"):
        event = services.alert_fire(
            rule=rule, finding=evaluate.Finding("manual:1", "a test firing", {})
        )
        with pytest.raises(services.DeliveryRetry, match="503"):
            services.alert_deliver(event_id=str(event.id), target="webhook")
        event.refresh_from_db()
        assert (event.webhook_status, event.webhook_attempts, event.webhook_error) == (
            "pending", 1, "the URL answered 503",
        )  # fmt: skip
        with pytest.raises(services.DeliveryRetry):
            services.alert_deliver(event_id=str(event.id), target="webhook")
        assert services.alert_deliver(event_id=str(event.id), target="webhook", final=True) == (
            "failed"
        )
        event.refresh_from_db()
        assert (event.webhook_status, event.webhook_attempts, event.webhook_error) == (
            "failed", 3, "the URL answered 500",
        )  # fmt: skip
        # Given up: a duplicate message sends nothing.
        assert services.alert_deliver(event_id=str(event.id), target="webhook") == "failed"
        assert [status for _, _, status in receiver.received] == [503, 503, 500]

        settings.CADENCE_EGRESS_ALLOWED_NETWORKS = []  # the policy changed since the rule was saved
        refused = services.alert_fire(rule=rule, finding=evaluate.Finding("manual:2", "x", {}))
        assert services.alert_deliver(event_id=str(refused.id), target="webhook") == "failed"
        refused.refresh_from_db()
        assert refused.webhook_attempts == 1 and "private or reserved" in refused.webhook_error
    assert len(receiver.received) == 3


def test_the_retry_backoff_doubles_with_jitter_up_to_its_cap(settings):
    from engine.alerts.tasks import backoff_seconds

    settings.CADENCE_ALERT_RETRY_BASE_SECONDS = 2
    settings.CADENCE_ALERT_RETRY_MAX_SECONDS = 20
    for attempt, nominal in ((1, 2), (2, 4), (3, 8), (4, 16), (5, 20), (9, 20)):
        delay = backoff_seconds(attempt)
        assert nominal * 0.75 <= delay <= nominal * 1.25


def test_a_catastrophic_pattern_costs_its_time_limit_and_other_rules_still_fire(
    world, committed_db, make_rule
):
    evil = make_rule(kind="log_match", pattern=r"(a|aa)+$", emails=["a@alpha.test"])
    plain = make_rule(kind="log_match", pattern=r"a{5}!", emails=["a@alpha.test"])
    with schema_context("org_alpha"):
        run = Run.objects.create(
            orchestrator_slug="x", trigger="rest", status="failed", error="a" * 40 + "!",
            finished_at=timezone.now(),
        )  # fmt: skip
        started = time.monotonic()
        fired = services.alerts_for_run(run_id=str(run.id))
        elapsed = time.monotonic() - started
        run.delete()
    assert [e.rule_id for e in fired] == [plain.id]
    assert elapsed < 1.0
    assert _events(evil) == []


def test_a_run_log_source_plugs_into_log_match_rules(world, committed_db, make_rule):
    rule = make_rule(kind="log_match", pattern=r"cache miss for \w+", emails=["a@alpha.test"])

    def run_log(run):
        yield "log 3", f"INFO cache miss for {run.orchestrator_slug}"

    evaluate.text_source_register(run_log)
    try:
        with schema_context("org_alpha"):
            run = Run.objects.create(
                orchestrator_slug="logger", trigger="rest", status="succeeded",
                finished_at=timezone.now(),
            )  # fmt: skip
            (event,) = services.alerts_for_run(run_id=str(run.id))
            run.delete()
    finally:
        evaluate._sources.remove(run_log)
    assert (event.rule_id, event.details) == (
        rule.id, {"where": "log 3", "match": "cache miss for logger"},
    )  # fmt: skip


def test_a_log_match_rule_fires_on_a_line_the_run_logged(
    world, flaky, openai_server, as_key, queued, make_rule
):
    # The provider's warning is a line of the run's log, not part of any error it stored.
    logged = make_rule(
        kind="log_match", pattern=r"llm call failed: code=(\w+) status=500", emails=["a@x.test"]
    )
    quiet = make_rule(kind="log_match", pattern=r"nobody logs this", emails=["a@x.test"])
    openai_server.error(500, message="boom")

    response = _invoke(as_key(world.alpha.keys["member"]), flaky, "hi")
    queued()

    assert response.status_code == 502
    run_id = _last_run_id("flaky")
    with schema_context("org_alpha"):
        run = Run.objects.get(pk=run_id)
        (line,) = run.logs.filter(message__startswith="llm call failed")
        llm_step = run.events.get(kind="llm_call").seq
    assert "llm call failed" not in run.error
    (event,) = _events(logged)
    assert (str(event.run_id), event.details) == (
        run_id,
        {
            "where": f"log {line.cursor} (warning, orchestrators.llm.openai_compatible, "
            f"step {llm_step})",
            "match": "llm call failed: code=llm_unavailable status=500",
        },
    )
    assert _events(quiet) == []


def test_failure_rate_fires_once_per_window_at_its_minimum_of_runs(world, committed_db, make_rule):
    slug = f"win-{uuid.uuid4().hex[:8]}"
    rule = make_rule(
        kind="failure_rate", window_seconds=600, failure_rate=0.5, min_runs=3,
        orchestrator=slug, emails=["a@alpha.test"],
    )  # fmt: skip
    now = timezone.now()
    with schema_context("org_alpha"):

        def run(status, ago=10):
            made = Run.objects.create(orchestrator_slug=slug, trigger="rest", status=status)
            Run.objects.filter(pk=made.pk).update(started_at=now - timedelta(seconds=ago))
            return made

        try:
            run("failed")
            run("failed", ago=900)  # outside the window
            run("succeeded")
            assert evaluate.window_finding(rule, now=now) is None  # 1 of 2: under min_runs
            run("running")  # unfinished runs do not count
            assert evaluate.window_finding(rule, now=now) is None
            run("succeeded")
            assert evaluate.window_finding(rule, now=now) is None  # 1 of 3 failed
            run("failed")
            (event,) = services.alerts_for_windows(now=now)
            assert event.details == {"failed": 2, "total": 4, "rate": 0.5}
            assert services.alerts_for_windows(now=now) == []  # the same window: once
        finally:
            Run.objects.filter(orchestrator_slug=slug).delete()


def test_a_turn_enqueues_no_judgement_without_enabled_rules(
    world, chat_orchestrator, as_key, queued, make_rule
):
    rule = make_rule(kind="run_failed", emails=["a@alpha.test"])
    with schema_context("org_alpha"):
        AlertRule.objects.filter(pk=rule.pk).update(enabled=False)

    _invoke(as_key(world.alpha.keys["member"]), chat_orchestrator["fast"], "hi")

    assert queued.pending == []


def test_the_beat_sweep_judges_windows_in_every_organization_once_per_period(
    world, committed_db, make_rule
):
    from engine.alerts.tasks import windows_sweep

    slug = f"tok-{uuid.uuid4().hex[:8]}"
    rule = make_rule(
        kind="tokens_over", window_seconds=3600, tokens=100, orchestrator=slug,
        emails=["a@alpha.test"],
    )  # fmt: skip
    with schema_context("org_alpha"):
        for used in (60, 50):
            Run.objects.create(
                orchestrator_slug=slug, trigger="rest", status="succeeded",
                usage={"total_tokens": used},
            )  # fmt: skip
    try:
        windows_sweep()
        windows_sweep()
        (event,) = _events(rule)
        assert event.details == {"tokens": 110, "limit": 100}
    finally:
        with schema_context("org_alpha"):
            Run.objects.filter(orchestrator_slug=slug).delete()
