"""Replay against the proof: a deterministic run reproduces its committed output hashes; a run
whose recorded response was altered is reported at that step."""

from __future__ import annotations

from django_tenants.utils import schema_context

from engine.models import RunEvent

TOOL = '/tool calculator {"expression": "2+3"}'


def _proven_run(world, as_key, instance, content):
    response = as_key(world.alpha.keys["member"]).post(
        f"/api/v1/orgs/alpha/orchestrators/{instance.id}/invoke/",
        {"messages": [{"role": "user", "content": content}]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    return response.json()["run"]


def _replay(world, as_key, run_id, role="member"):
    return as_key(world.alpha.keys[role]).post(f"/api/v1/orgs/alpha/runs/{run_id}/proof/replay/")


def test_a_deterministic_run_replayed_against_its_proof_matches(world, chat_orchestrator, as_key):
    run_id = _proven_run(world, as_key, chat_orchestrator["fast"], TOOL)
    body = _replay(world, as_key, run_id).json()
    assert (body["matches"], body["mismatches"], body["error"]) == (True, [], "")
    with schema_context("org_alpha"):
        assert body["steps"] == RunEvent.objects.filter(run_id=run_id).count()


def test_an_altered_recorded_response_is_reported_at_its_step(world, chat_orchestrator, as_key):
    run_id = _proven_run(world, as_key, chat_orchestrator["fast"], TOOL)
    with schema_context("org_alpha"):
        tool = RunEvent.objects.get(run_id=run_id, kind="tool_call")
        tool.data = {**tool.data, "outputs": {"result": {"value": 6}}}
        tool.save(update_fields=["data"])
    body = _replay(world, as_key, run_id).json()
    assert body["matches"] is False
    reported = [(m["seq"], m["name"]) for m in body["mismatches"]]
    assert (tool.seq, "calculator") in reported
    with schema_context("org_alpha"):
        # the steps before the altered response, and the model call that asked for it, match;
        # the notes that contain the tool call (its ancestors) carry the change up
        before = RunEvent.objects.filter(run_id=run_id, seq__lt=tool.seq, kind="llm_call")
        assert all(seq not in dict(reported) for seq in before.values_list("seq", flat=True))
        assert 1 not in dict(reported)


def test_replay_needs_a_member_of_the_organization(world, chat_orchestrator, as_key):
    run_id = _proven_run(world, as_key, chat_orchestrator["fast"], "hi")
    assert _replay(world, as_key, run_id, "viewer").status_code == 403
    assert (
        as_key(world.bravo.keys["owner"])
        .post(f"/api/v1/orgs/alpha/runs/{run_id}/proof/replay/")
        .status_code
        == 404
    )
