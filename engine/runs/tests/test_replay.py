"""POST …/runs/<id>/replay/: one step, or the run from a step, re-run as a run of its own under
the run's snapshot, from recorded responses (deterministic) or live, with the diff of outputs."""

from __future__ import annotations

import json

import pytest
from django_tenants.utils import schema_context

from engine.models import Run, RunEvent

BASE = "/api/v1/orgs/alpha/runs"
TOOL = '/tool calculator {"expression": "2+3"}'


def _invoke(client, instance, content: str) -> dict:
    response = client.post(
        f"/api/v1/orgs/alpha/orchestrators/{instance.id}/invoke/",
        {"messages": [{"role": "user", "content": content}]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    return response.json()


def _steps(run_id: str) -> list[RunEvent]:
    with schema_context("org_alpha"):
        return list(RunEvent.objects.filter(run_id=run_id).order_by("seq"))


def _replays(run_id: str) -> int:
    with schema_context("org_alpha"):
        return Run.objects.filter(replay_of_id=run_id).count()


def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@pytest.fixture
def tool_run(world, chat_orchestrator, as_key):
    """A member's turn whose agent step (seq 2) made a model call, a tool call and another."""
    return _invoke(as_key(world.alpha.keys["member"]), chat_orchestrator["fast"], TOOL)


def test_a_deterministic_step_replayed_gives_the_same_output_byte_for_byte(world, tool_run, as_key):
    run_id = tool_run["run"]

    response = as_key(world.alpha.keys["admin"]).post(
        f"{BASE}/{run_id}/replay/", {"step": 2}, format="json"
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert {k: v for k, v in body.items() if k != "id"} == {
        "status": "succeeded",
        "replay_of": run_id,
        "step": 2,
        "live": False,
        "diff": {},
        "error": None,
    }
    original, replayed = _steps(run_id), _steps(body["id"])
    # the step alone, from its recorded inputs: prepare_prompt did not run again
    assert [(s.seq, s.parent_seq, s.kind, s.name) for s in replayed] == [
        (1, None, "note", "agent"),
        (2, 1, "llm_call", "llm_call"),
        (3, 1, "tool_call", "calculator"),
        (4, 1, "llm_call", "llm_call"),
        (5, None, "step", "run"),
    ]
    assert _canonical(replayed[0].data["outputs"]) == _canonical(original[1].data["outputs"])
    assert _canonical(replayed[0].data["inputs"]) == _canonical(original[1].data["inputs"])
    assert replayed[2].data == original[3].data  # the tool answered from its recorded result
    with schema_context("org_alpha"):
        replay = Run.objects.get(pk=body["id"])
        source = Run.objects.get(pk=run_id)
    assert (replay.trigger, str(replay.replay_of_id), replay.replay_step) == ("replay", run_id, 2)
    assert replay.snapshot_id == source.snapshot_id  # pinned to the original's definition
    assert replay.input["replay"] == {"of": run_id, "step": 2, "live": False}
    assert replay.output == source.output
    detail = as_key(world.alpha.keys["admin"]).get(f"{BASE}/{body['id']}/").json()
    assert (detail["trigger"], detail["replay_of"], detail["replay_step"]) == (
        "replay",
        run_id,
        2,
    )


def test_a_run_replayed_from_a_step_runs_the_rest_of_the_flow(world, tool_run, as_user, api):
    run_id = tool_run["run"]
    owner = world.alpha.users["owner"]
    api.credentials()

    body = as_user(owner).post(f"{BASE}/{run_id}/replay/", {"from_step": 2}, format="json").json()

    assert (body["status"], body["from_step"], body["diff"]) == ("succeeded", 2, {})
    assert "step" not in body
    assert [(s.kind, s.name) for s in _steps(body["id"])] == [
        ("note", "agent"),
        ("llm_call", "llm_call"),
        ("tool_call", "calculator"),
        ("llm_call", "llm_call"),
        ("note", "finalize"),
        ("step", "run"),
    ]
    with schema_context("org_alpha"):
        replay = Run.objects.get(pk=body["id"])
    assert replay.output == tool_run["message"]["content"]
    assert (replay.owner_user_id, replay.owner_api_key_id) == (owner.pk, None)  # whose it is


def test_steps_inside_child_sync_and_split_replay_alone(world, traced_orchestrator, as_key):
    run_id = _invoke(as_key(world.alpha.keys["member"]), traced_orchestrator, "hi")["run"]
    client = as_key(world.alpha.keys["admin"])

    def replay(seq: int) -> tuple[dict, list]:
        response = client.post(f"{BASE}/{run_id}/replay/", {"step": seq}, format="json")
        assert response.status_code == 201, response.json()
        body = response.json()
        return body, [(s.parent_seq, s.kind, s.name) for s in _steps(body["id"])]

    branch, branch_steps = replay(4)  # finalize, a .sync branch inside the child cadence
    group, group_steps = replay(3)  # the .sync group itself
    child, child_steps = replay(2)
    split, split_steps = replay(5)

    assert [b["diff"] for b in (branch, group, child, split)] == [{}, {}, {}, {}]
    assert branch_steps == [(None, "note", "finalize"), (None, "step", "run")]
    assert group_steps == [(None, "sync", "fin"), (1, "note", "finalize"), (None, "step", "run")]
    assert child_steps == [
        (None, "child", "post"),
        (1, "sync", "fin"),
        (2, "note", "finalize"),
        (None, "step", "run"),
    ]
    assert split_steps == [
        (None, "split", "route"),
        (2 - 1, "note", "agent"),
        (2, "llm_call", "llm_call"),
        (None, "step", "run"),
    ]
    original = _steps(run_id)
    assert _canonical(_steps(branch["id"])[0].data["outputs"]) == _canonical(
        original[3].data["outputs"]
    )
    refused = client.post(f"{BASE}/{run_id}/replay/", {"from_step": 3}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        "from_step needs a step of the flow itself; step 3 runs inside step 2."
    )


def test_live_replay_calls_the_model_again_and_the_diff_shows_what_changed(
    world, flaky, openai_server, as_key
):
    openai_server.reply("first answer")
    run_id = _invoke(as_key(world.alpha.keys["member"]), flaky, "hi")["run"]
    openai_server.reply("second answer")
    asked = len(openai_server.requests)
    client = as_key(world.alpha.keys["admin"])

    recorded = client.post(f"{BASE}/{run_id}/replay/", {"step": 2}, format="json").json()
    assert (recorded["diff"], len(openai_server.requests)) == ({}, asked)  # no model call

    live = client.post(f"{BASE}/{run_id}/replay/", {"step": 2, "live": True}, format="json")

    assert live.status_code == 201, live.json()
    body = live.json()
    assert (body["status"], body["live"], len(openai_server.requests)) == (
        "succeeded",
        True,
        asked + 1,
    )
    assert body["diff"]["final"] == {"before": "first answer", "after": "second answer"}
    assert set(body["diff"]) <= {"final", "prompt_tokens", "completion_tokens"}


def test_a_failed_step_fails_again_from_its_record_and_live_once_the_provider_recovers(
    world, flaky, openai_server, as_key
):
    openai_server.error(500, message="boom")
    assert _invoke_status(as_key(world.alpha.keys["member"]), flaky) == 502
    with schema_context("org_alpha"):
        run = Run.objects.get(orchestrator=flaky)
    client = as_key(world.alpha.keys["admin"])

    again = client.post(f"{BASE}/{run.id}/replay/", {"step": 2}, format="json").json()
    openai_server.reply("recovered")
    live = client.post(f"{BASE}/{run.id}/replay/", {"step": 2, "live": True}, format="json").json()

    assert (again["status"], again["error"]["code"], again["diff"]) == (
        "failed",
        run.error_code,
        {},
    )
    assert [(s.kind, s.outcome) for s in _steps(again["id"])] == [
        ("note", "failed"),
        ("llm_call", "failed"),
    ]
    assert (live["status"], live["error"]) == ("succeeded", None)
    assert live["diff"]["final"] == {"before": None, "after": "recovered"}


def _invoke_status(client, instance) -> int:
    return client.post(
        f"/api/v1/orgs/alpha/orchestrators/{instance.id}/invoke/",
        {"messages": [{"role": "user", "content": "hi"}]},
        format="json",
    ).status_code


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        ({}, "invalid", "step"),
        ({"step": 1, "from_step": 1}, "invalid", "step"),
        ({"step": "two"}, "invalid", "step"),
        ({"step": 0}, "invalid", "step"),
        ({"step": 10**12}, "invalid", "step"),
        ({"step": 2, "live": "maybe"}, "invalid", "live"),
        ({"step": 2, "colour": "red"}, "invalid", "colour"),
        ({"step": 99}, "unknown_step", "step"),
        ({"from_step": 99}, "unknown_step", "from_step"),
        ({"step": 3}, "invalid_step", "step"),  # a model call: replay the note that made it
        ({"from_step": 3}, "invalid_step", "from_step"),
    ],
)
def test_bad_replays_are_a_400_naming_what_was_wrong(world, tool_run, as_key, payload, code, field):
    run_id = tool_run["run"]

    response = as_key(world.alpha.keys["admin"]).post(
        f"{BASE}/{run_id}/replay/", payload, format="json"
    )

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == code
    details = error["details"]
    assert field in (details if code == "invalid" else [details["field"]])
    if payload == {"step": 3}:
        assert (
            error["message"] == "Step 3 is a llm_call step: replay the step that made it (step 2)."
        )
    assert _replays(run_id) == 0


def test_only_admins_and_owners_replay_and_outsiders_see_nothing(
    world, tool_run, as_key, as_user, api
):
    run_id = tool_run["run"]
    path = f"{BASE}/{run_id}/replay/"

    for role in ("viewer", "member"):  # the member's own run included
        refused = as_key(world.alpha.keys[role]).post(path, {"step": 2}, format="json")
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "role_required")
    assert (
        as_key(world.bravo.keys["owner"]).post(path, {"step": 2}, format="json").status_code == 404
    )
    api.credentials()
    assert as_user(world.outsider).post(path, {"step": 2}, format="json").status_code == 404
    api.logout()
    assert (
        as_user(world.bravo.users["owner"]).post(path, {"step": 2}, format="json").status_code
        == 404
    )
    api.logout()
    missing = as_key(world.alpha.keys["admin"]).post(
        f"{BASE}/00000000-0000-0000-0000-000000000000/replay/", {"step": 2}, format="json"
    )
    assert missing.status_code == 404
    assert _replays(run_id) == 0


def test_a_run_without_a_snapshot_cannot_be_replayed(world, db, as_key):
    with schema_context("org_alpha"):
        run = Run.objects.create(orchestrator_slug="gone", trigger="invoke", status="succeeded")
        RunEvent.objects.create(
            run=run,
            seq=1,
            kind="note",
            name="prepare_prompt",
            outcome="completed",
            data={"inputs": {"messages": []}, "outputs": {}},
            at=run.started_at,
        )

    response = as_key(world.alpha.keys["admin"]).post(
        f"{BASE}/{run.id}/replay/", {"step": 1}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "replay_unavailable"
