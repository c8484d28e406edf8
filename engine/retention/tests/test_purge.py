"""Runs past their organization's plan retention are purged in batches, with their steps and
payload files; their proofs and log entries stay verifiable."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from django_tenants.utils import schema_context

from engine.models import Run, RunEvent
from engine.retention.models import PurgedRun
from engine.retention.tasks import purge
from engine.trust import log
from engine.trust.models import ExecutionProof, LogLeaf

BIG = "x" * 20_000  # past the recorder's inline size: the steps' data goes to file storage


def _invoke(api, instance, content: str) -> str:
    response = api.post(
        f"/api/v1/orgs/alpha/orchestrators/{instance.id}/invoke/",
        {"messages": [{"role": "user", "content": content}]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    return response.json()["run"]


def _age(run_id: str, days: int, schema: str = "org_alpha") -> None:
    with schema_context(schema):
        Run.objects.filter(pk=run_id).update(started_at=timezone.now() - timedelta(days=days))


@pytest.fixture
def bravo_keeps_60_days(world, committed_db):
    from tenants.limits.models import OrganizationLimits
    from tenants.limits.plans import limits_forget

    OrganizationLimits.objects.update_or_create(
        organization=world.bravo.org, defaults={"run_retention_days": 60}
    )
    limits_forget()
    yield
    OrganizationLimits.objects.filter(organization=world.bravo.org).delete()
    limits_forget()


def test_old_runs_are_purged_by_plan_in_batches_and_their_proofs_still_verify(
    world, chat_orchestrator, as_key, settings, bravo_keeps_60_days
):
    settings.CADENCE_RETENTION_BATCH = 1  # every run its own batch
    member = as_key(world.alpha.keys["member"])
    old = [_invoke(member, chat_orchestrator["fast"], BIG) for _ in range(2)]
    recent = _invoke(member, chat_orchestrator["fast"], BIG)
    for run_id in old:
        _age(run_id, 40)  # alpha's plan keeps 30 days
    with schema_context("org_alpha"):
        running = Run.objects.create(orchestrator_slug="chatbot", trigger="rest")
        files = list(
            RunEvent.objects.filter(run_id__in=old)
            .exclude(payload="")
            .values_list("payload", flat=True)
        )
        kept_files = list(
            RunEvent.objects.filter(run_id=recent)
            .exclude(payload="")
            .values_list("payload", flat=True)
        )
    _age(str(running.id), 40)
    with schema_context("org_bravo"):
        bravo_run = Run.objects.create(orchestrator_slug="b", trigger="rest", status="succeeded")
    _age(str(bravo_run.id), 40, "org_bravo")  # bravo keeps 60 days
    assert files and kept_files and all(default_storage.exists(p) for p in files)

    try:
        report = purge()

        assert report["runs"] >= 2 and report["files"] >= len(files)
        with schema_context("org_alpha"):
            assert not Run.objects.filter(pk__in=old).exists()
            assert not RunEvent.objects.filter(run_id__in=old).exists()
            assert Run.objects.get(pk=recent).events.count() > 0
            assert Run.objects.filter(pk=running.pk).exists()  # still running: never purged
            purged = {str(p.run_id): p for p in PurgedRun.objects.filter(run_id__in=old)}
            assert set(purged) == set(old)
            assert {
                (p.status, p.orchestrator_slug, str(p.owner_api_key_id)) for p in purged.values()
            } == {("succeeded", "chatbot", world.alpha.key_ids["member"])}
            # The evidence stays: proofs, log entries, and an audit of the log that knows these
            # runs were purged, not removed.
            assert ExecutionProof.objects.filter(run_id__in=old).count() == 2
            assert LogLeaf.objects.filter(run_id__in=old).count() == 2
            assert not [p for p in log.log_audit() if any(r in p for r in old)]
        with schema_context("org_bravo"):
            assert Run.objects.filter(pk=bravo_run.pk).exists()
        assert not any(default_storage.exists(p) for p in files)
        assert all(default_storage.exists(p) for p in kept_files)

        again = purge()  # idempotent: nothing left to purge
        with schema_context("org_alpha"):
            assert not Run.objects.filter(pk__in=old).exists()
        assert (again["runs"], again["steps"], again["files"]) == (0, 0, 0)
    finally:
        with schema_context("org_alpha"):
            Run.objects.filter(pk=running.pk).delete()
        with schema_context("org_bravo"):
            Run.objects.filter(pk=bravo_run.pk).delete()


def test_a_purged_runs_proof_and_inclusion_answer_and_its_data_is_gone(
    world, chat_orchestrator, as_key
):
    from engine.retention.services import runs_purge

    run_id = _invoke(as_key(world.alpha.keys["member"]), chat_orchestrator["fast"], "hello")
    _age(run_id, 40)
    with schema_context("org_alpha"):
        digest = ExecutionProof.objects.get(run_id=run_id).digest
        runs_purge(older_than=timezone.now() - timedelta(days=30))
        assert not Run.objects.filter(pk=run_id).exists()

    for role in ("admin", "member"):  # the member started it
        api = as_key(world.alpha.keys[role])
        proof = api.get(f"/api/v1/orgs/alpha/runs/{run_id}/proof/")
        assert (proof.status_code, proof.json()["digest"]) == (200, digest)
        inclusion = api.get(f"/api/v1/orgs/alpha/transparency/inclusion/?run={run_id}")
        assert (inclusion.status_code, inclusion.json()["leaf_data"]) == (200, digest)
        bundle = api.get(f"/api/v1/orgs/alpha/runs/{run_id}/bundle/")
        assert (bundle.status_code, bundle.json()["error"]["code"]) == (410, "run_purged")
        assert api.get(f"/api/v1/orgs/alpha/runs/{run_id}/").status_code == 404
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="purged by retention on .*: its step records are gone"):
        call_command("verify_run", run_id, "--org", "alpha")
    # Not their run, not their proof; another organization's key sees nothing.
    assert (
        as_key(world.alpha.keys["viewer"])
        .get(f"/api/v1/orgs/alpha/runs/{run_id}/proof/")
        .status_code
        == 404
    )
    assert (
        as_key(world.bravo.keys["owner"])
        .get(f"/api/v1/orgs/alpha/runs/{run_id}/proof/")
        .status_code
        == 404
    )


def test_a_run_removed_without_retention_is_still_reported_by_the_log_audit(
    world, chat_orchestrator, as_key
):
    run_id = _invoke(as_key(world.alpha.keys["member"]), chat_orchestrator["fast"], "hello")
    with schema_context("org_alpha"):
        Run.objects.filter(pk=run_id).delete()
        problems = [p for p in log.log_audit() if run_id in p]
    assert len(problems) == 1 and problems[0].endswith(f"run {run_id} was removed")


def test_alert_history_past_the_retention_is_purged(world, committed_db):
    from engine.alerts.evaluate import Finding
    from engine.alerts.models import AlertEvent, AlertRule
    from engine.alerts.services import alert_fire, alert_rule_create
    from engine.retention.services import alert_events_purge

    with schema_context("org_alpha"):
        rule, _ = alert_rule_create(actor="test", name="r", kind="drift", emails=["a@alpha.test"])
        try:
            old = alert_fire(rule=rule, finding=Finding("old", "old", {}))
            new = alert_fire(rule=rule, finding=Finding("new", "new", {}))
            AlertEvent.objects.filter(pk=old.pk).update(
                created_at=timezone.now() - timedelta(days=40)
            )
            assert alert_events_purge(older_than=timezone.now() - timedelta(days=30), batch=1) == 1
            assert list(AlertEvent.objects.filter(rule=rule).values_list("id", flat=True)) == [
                new.id
            ]
        finally:
            AlertRule.objects.filter(pk=rule.pk).delete()
