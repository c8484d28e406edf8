"""GET …/runs/<id>/lineage/: the run's graph of steps and connecting fields, and one value's chain
back to the run's input, on a real turn through .child, .sync and .split."""

from __future__ import annotations

import pytest

BASE = "/api/v1/orgs/alpha/runs"


@pytest.fixture
def traced_run(world, traced_orchestrator, as_key):
    response = as_key(world.alpha.keys["member"]).post(
        f"/api/v1/orgs/alpha/orchestrators/{traced_orchestrator.id}/invoke/",
        {"messages": [{"role": "user", "content": "hi"}]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    return response.json()["run"]


def test_the_graph_names_every_step_and_who_wrote_what_each_read(world, traced_run, as_key):
    body = as_key(world.alpha.keys["member"]).get(f"{BASE}/{traced_run}/lineage/").json()

    assert body["run"] == traced_run
    assert [(n["seq"], n["name"], n["kind"], n["status"]) for n in body["nodes"]] == [
        (1, "prepare_prompt", "note", "completed"),
        (2, "post", "child", "completed"),
        (3, "fin", "sync", "completed"),
        (4, "finalize", "note", "completed"),
        (5, "route", "split", "completed"),
        (6, "agent", "note", "completed"),
        (7, "llm_call", "llm_call", "completed"),
        (8, "finalize", "note", "completed"),
        (9, "run", "step", "completed"),
    ]
    edges = [(e["from"], e["to"], e["field"]) for e in body["edges"]]
    assert edges == [
        (None, 4, "finish_reason"),  # the branch read the input's empty finish_reason
        (4, 5, "finish_reason"),  # through the .sync merge and the child's copy-back
        (None, 6, "completion_tokens"),
        (1, 6, "messages"),
        (None, 6, "prompt_tokens"),
        (None, 6, "turns"),
        (4, 8, "finish_reason"),  # agent wrote the same "stop": the value is still the branch's
    ]


def test_the_chain_of_a_value_goes_back_to_the_input(world, traced_run, as_key):
    client = as_key(world.alpha.keys["member"])

    route = client.get(f"{BASE}/{traced_run}/lineage/?step=5&field=finish_reason").json()
    agent = client.get(f"{BASE}/{traced_run}/lineage/?step=6&field=messages").json()

    assert (route["run"], route["step"], route["field"]) == (traced_run, 5, "finish_reason")
    assert route["chain"] == [
        {
            "seq": 5,
            "name": "route",
            "kind": "split",
            "field": "finish_reason",
            "value_preview": '"stop"',
        },
        {
            "seq": 4,
            "name": "finalize",
            "kind": "note",
            "field": "finish_reason",
            "value_preview": '"stop"',
        },
        {
            "seq": None,
            "name": "input",
            "kind": "input",
            "field": "finish_reason",
            "value_preview": '""',
        },
    ]
    messages = (
        '[{"content": "You are a helpful assistant.", "role": "system"}, '
        '{"content": "hi", "role": "user"}]'
    )
    assert agent["chain"] == [
        {"seq": 6, "name": "agent", "kind": "note", "field": "messages", "value_preview": messages},
        {
            "seq": 1,
            "name": "prepare_prompt",
            "kind": "note",
            "field": "messages",
            "value_preview": messages,
        },
        {
            "seq": None,
            "name": "input",
            "kind": "input",
            "field": None,
            "value_preview": '{"history_messages": 0, "message": "hi"}',
        },
    ]


@pytest.mark.parametrize(
    ("query", "code", "field"),
    [
        ("step=99&field=messages", "unknown_step", "step"),
        ("step=6&field=colour", "unknown_field", "field"),
        ("step=7&field=messages", "unknown_field", "field"),  # a model call reads no field
        ("step=abc&field=messages", "invalid_parameter", "step"),
        ("step=-1&field=messages", "invalid_parameter", "step"),
        ("step=99999999999999999999&field=messages", "invalid_parameter", "step"),
        ("step=6", "invalid_parameter", "field"),
        ("field=messages", "invalid_parameter", "step"),
        ("step=6&field=", "invalid_parameter", "field"),
        (f"step=6&field={'x' * 201}", "invalid_parameter", "field"),
        ("step=6&field=messages&depth=2", "invalid_parameter", "depth"),
        ("step=6&field=mess%00ages", "invalid_characters", None),
    ],
)
def test_bad_questions_are_a_400_naming_what_was_wrong(
    world, traced_run, as_key, query, code, field
):
    response = as_key(world.alpha.keys["member"]).get(f"{BASE}/{traced_run}/lineage/?{query}")

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == code
    if field is not None:
        assert error["details"]["field"] == field
    if code == "unknown_step":
        assert error["message"] == "The run has no step 99."


def test_lineage_follows_the_runs_privacy_and_refuses_outsiders(
    world, traced_run, as_key, as_user, api
):
    path = f"{BASE}/{traced_run}/lineage/"

    assert as_key(world.alpha.keys["admin"]).get(path).status_code == 200
    # a viewer reads runs, but only their own: another member's run is the same 404 as none
    refused = as_key(world.alpha.keys["viewer"]).get(path)
    assert (refused.status_code, refused.json()["error"]["code"]) == (404, "run_not_found")
    assert as_key(world.bravo.keys["owner"]).get(path).status_code == 404
    api.credentials()
    assert as_user(world.outsider).get(path).status_code == 404
    api.logout()
    assert as_key(world.alpha.keys["admin"]).get(f"{BASE}/not-a-run/lineage/").status_code == 404
