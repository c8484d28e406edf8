"""Drift after an edit: a flag and a structural diff, per run and as a report."""

from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from engine.models import Run
from engine.trust.drift import definition_diff, flow_notes
from engine.trust.snapshots import snapshot_for_orchestrator

pytestmark = pytest.mark.django_db


@pytest.fixture
def pinned_run(world):
    from orchestrators.services import llm_config_create, orchestrator_create

    with schema_context("org_alpha"):
        llm = llm_config_create(name="drift-llm", provider="offline", model="cadence-offline")
        instance = orchestrator_create(
            slug="driftbot", name="Driftbot", llm_config=llm, tools=["calculator"]
        )
        run = Run.objects.create(
            orchestrator=instance,
            orchestrator_slug=instance.slug,
            trigger="rest",
            status="succeeded",
            snapshot=snapshot_for_orchestrator(instance=instance),
            owner_api_key_id=world.alpha.key_ids["viewer"],
        )
        return instance, llm, run


def test_a_run_on_the_current_definition_has_not_drifted(world, as_key, pinned_run):
    _, _, run = pinned_run
    body = as_key(world.alpha.keys["viewer"]).get(f"/api/v1/orgs/alpha/runs/{run.id}/drift/").json()
    assert (body["drifted"], body["changes"], body["current"]) == (False, [], body["snapshot"])


def test_another_members_run_drift_is_a_404(world, as_key, pinned_run):
    _, _, run = pinned_run
    url = f"/api/v1/orgs/alpha/runs/{run.id}/drift/"
    assert as_key(world.alpha.keys["member"]).get(url).status_code == 404
    assert as_key(world.alpha.keys["admin"]).get(url).status_code == 200


def test_an_edit_is_drift_with_what_changed(world, as_key, pinned_run):
    instance, llm, run = pinned_run
    with schema_context("org_alpha"):
        instance.system_prompt = "Be terse."
        instance.tools = ["calculator", "clock"]
        instance.save()
        llm.model = "cadence-offline@5ms"
        llm.save()
    api = as_key(world.alpha.keys["viewer"])
    body = api.get(f"/api/v1/orgs/alpha/runs/{run.id}/drift/").json()
    assert body["drifted"] is True
    assert [(c["area"], c["path"], c["before"], c["after"]) for c in body["changes"]] == [
        ("prompts", "system_prompt", "You are a helpful assistant.", "Be terse."),
        ("tools", "tools.clock", None, "present"),
        ("model", "llm.model", "cadence-offline", "cadence-offline@5ms"),
    ]
    report = api.get("/api/v1/orgs/alpha/drift/").json()["results"]
    (entry,) = [r for r in report if r["slug"] == "driftbot"]
    assert (entry["outdated_runs"], entry["outdated_snapshots"]) == (1, [run.snapshot_id])
    assert entry["current_snapshot"] == body["current"]


def test_flow_changes_name_the_notes_added_and_removed():
    old = {"flow": {"steps": [{"then": "prepare_prompt"}, {"then": "agent"}, {"then": "finalize"}]}}
    new = {
        "flow": {
            "steps": [
                {"then": "prepare_prompt"},
                {"sync": "both", "notes": ["agent", "audit"]},
                {
                    "split": "s",
                    "condition": {"field": "x", "op": "eq", "value": 1},
                    "if_true": ["finalize"],
                },
            ]
        }
    }
    assert flow_notes(new["flow"]) == ["prepare_prompt", "agent", "audit", "finalize"]
    assert definition_diff(old, new) == [
        {"area": "flow", "path": "flow", "before": [], "after": ["audit"]}
    ]


def test_drift_endpoints_hide_runs_from_outsiders(world, as_key, pinned_run):
    _, _, run = pinned_run
    assert (
        as_key(world.bravo.keys["owner"])
        .get(f"/api/v1/orgs/alpha/runs/{run.id}/drift/")
        .status_code
        == 404
    )
    assert (
        as_key(world.bravo.keys["owner"])
        .get(f"/api/v1/orgs/bravo/runs/{run.id}/drift/")
        .status_code
        == 404
    )
    assert as_key(world.bravo.keys["owner"]).get("/api/v1/orgs/alpha/drift/").status_code == 404
