"""Step records: exact nesting, inputs and outputs, errors with stacks, resources, model call
details, the environment, and large payloads kept whole in file storage."""

from __future__ import annotations

import json

from django.core.files.storage import default_storage
from django_tenants.utils import schema_context

from engine.models import Run

TOOL = '/tool calculator {"expression": "2+3"}'


def _invoke(client, instance, content: str):
    return client.post(
        f"/api/v1/orgs/alpha/orchestrators/{instance.id}/invoke/",
        {"messages": [{"role": "user", "content": content}]},
        format="json",
    )


def _steps(run_id: str) -> tuple[Run, list]:
    with schema_context("org_alpha"):
        run = Run.objects.get(pk=run_id)
        return run, list(run.events.order_by("seq"))


def test_steps_nest_exactly_with_their_inputs_outputs_and_model_calls(
    world, chat_orchestrator, as_key
):
    body = _invoke(as_key(world.alpha.keys["member"]), chat_orchestrator["fast"], TOOL).json()

    run, steps = _steps(body["run"])
    shape = [(s.seq, s.parent_seq, s.kind, s.name, s.outcome) for s in steps]
    assert shape == [
        (1, None, "note", "prepare_prompt", "completed"),
        (2, None, "note", "agent", "completed"),
        (3, 2, "llm_call", "llm_call", "completed"),
        (4, 2, "tool_call", "calculator", "completed"),
        (5, 2, "llm_call", "llm_call", "completed"),
        (6, None, "note", "finalize", "completed"),
        (7, None, "step", "run", "completed"),
    ]
    prepare, agent, first_call, tool = steps[0], steps[1], steps[2], steps[3]
    assert prepare.data["inputs"]["messages"] == []
    assert prepare.data["outputs"]["messages"][-1] == {"role": "user", "content": TOOL}
    assert agent.data["inputs"]["messages"] == prepare.data["outputs"]["messages"]
    assert agent.data["outputs"]["final"] == body["message"]["content"]
    assert tool.data == {
        "inputs": {"arguments": {"expression": "2+3"}},
        "outputs": {"result": body["tool_calls"][0]["result"]},
    }
    llm = first_call.data["llm"]
    assert (llm["provider"], llm["model"]) == ("offline", "cadence-offline")
    assert llm["tokens_in"] + llm["tokens_out"] > 0
    assert (
        sum(s.data["llm"]["tokens_in"] for s in steps if s.kind == "llm_call")
        == (body["usage"]["prompt_tokens"])
    )
    assert first_call.data["outputs"]["tool_calls"][0]["name"] == "calculator"
    assert first_call.data["inputs"]["tools"] == ["calculator"]
    for step in steps:
        assert step.started_at <= step.at
        assert step.duration_ms is not None and step.duration_ms >= 0
    assert all(s.cpu_ms is not None for s in steps if s.kind in ("note", "llm_call"))
    assert all(isinstance(s.memory_kb, int) for s in steps if s.kind == "note")


def test_the_run_records_its_environment(world, chat_orchestrator, as_key):
    import os

    instance = chat_orchestrator["fast"]
    body = _invoke(as_key(world.alpha.keys["member"]), instance, "hi").json()

    run, _ = _steps(body["run"])
    environment = run.environment
    assert environment["orchestrator"] == {
        "id": str(instance.id),
        "slug": "chatbot",
        "version": instance.version,
        "config_hash": instance.config_hash,
    }
    assert environment["framework"] == "cadence"
    assert environment["llm"] == {
        "config_id": f"org_alpha:{instance.llm_config_id}",
        "provider": "offline",
        "model": "cadence-offline",
    }
    assert environment["plugins"] == {}
    assert environment["process"]["pid"] == os.getpid()


def test_a_failed_model_call_records_the_error_type_message_and_stack(
    world, flaky, openai_server, as_key
):
    openai_server.error(500, message="boom")

    response = _invoke(as_key(world.alpha.keys["member"]), flaky, "hi")

    assert response.status_code == 502
    with schema_context("org_alpha"):
        run = Run.objects.get(orchestrator=flaky)
        steps = list(run.events.order_by("seq"))
    assert (run.status, run.error_code) == ("failed", "llm_unavailable")
    shape = [(s.seq, s.parent_seq, s.kind, s.name, s.outcome) for s in steps]
    assert shape == [
        (1, None, "note", "prepare_prompt", "completed"),
        (2, None, "note", "agent", "failed"),
        (3, 2, "llm_call", "llm_call", "failed"),
    ]
    call, agent = steps[2], steps[1]
    assert call.error_type == "LLMError" and "Traceback" in call.stack
    assert agent.error_type == "LLMError" and "LLMError" in agent.stack
    # NoteError's text is the library's "[NOTE_ERROR] <the original error's message>" (issue 14)
    assert agent.error.startswith("NoteError: [NOTE_ERROR] The provider is unavailable")
    assert "sk-flaky-secret" not in json.dumps(
        [[s.data, s.error, s.stack] for s in steps] + [run.environment, run.error]
    )


def test_a_large_payload_is_truncated_in_the_row_and_kept_whole_in_storage(
    world, chat_orchestrator, as_key
):
    big = "x" * 20_000
    body = _invoke(as_key(world.alpha.keys["member"]), chat_orchestrator["fast"], big).json()

    _, steps = _steps(body["run"])
    prepare = steps[0]
    assert prepare.payload == f"runs/org_alpha/{body['run']}/1.json"
    kept = prepare.data["outputs"]
    assert (kept["truncated"], kept["bytes"] > 20_000, len(kept["preview"])) == (True, True, 2000)
    with default_storage.open(prepare.payload) as stored:
        whole = json.loads(stored.read())
    assert whole["outputs"]["messages"][-1] == {"role": "user", "content": big}
    assert steps[-1].payload == ""  # small steps stay inline


def test_a_run_takes_its_team_and_plugin_versions_from_its_orchestrator_in_its_insert(
    world, chat_orchestrator
):
    """One statement writes the run's row with the orchestrator's team and pinned plugin
    versions (read by the INSERT itself)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from engine.runs.recorder import RunRecorder
    from orchestrators.models import OrchestratorInstance
    from tenants.teams.models import Team

    instance = chat_orchestrator["fast"]
    lock = {"p-one": {"version": "1.2.0", "sha256": "ab"}, "p-two": "0.3.1"}
    with schema_context("org_alpha"):
        team = Team.objects.create(slug="recorders", name="Recorders")
        OrchestratorInstance.objects.filter(pk=instance.pk).update(plugin_lock=lock, team=team)
    try:
        recorder = RunRecorder(
            schema_name="org_alpha",
            orchestrator_id=str(instance.id),
            orchestrator_slug="chatbot",
            config_hash="h",
            trigger="rest",
        )
        with schema_context("org_alpha"), CaptureQueriesContext(connection) as queries:
            recorder.start()
        assert [q["sql"].split(" ", 1)[0] for q in queries if "search_path" not in q["sql"]] == [
            "INSERT"
        ]
        assert recorder.fields["team_id"] == team.pk
        with schema_context("org_alpha"):
            run = Run.objects.get(pk=recorder.run_id)
        assert run.team_id == team.pk
        assert run.environment["plugins"] == {"p-one": "1.2.0", "p-two": "0.3.1"}
        assert run.started_at == recorder.started_at

    finally:
        with schema_context("org_alpha"):
            Run.objects.filter(pk=recorder.run_id).delete()
            OrchestratorInstance.objects.filter(pk=instance.pk).update(team=None)
            Team.objects.filter(slug="recorders").delete()


def test_a_runs_insert_values_are_those_the_model_would_send(world):
    """_run_values (no model instance per turn) gives what Run(**fields) through pre_save and
    get_db_prep_save gives, the start time aside."""
    import uuid

    from django.db import connection
    from psycopg.types.json import Jsonb

    from engine.runs.recorder import _run_insert_sql, _run_values

    fields = {
        "id": str(uuid.uuid4()),
        "orchestrator_id": str(uuid.uuid4()),
        "orchestrator_slug": "chatbot",
        "config_hash": "h" * 64,
        "trigger": "openai",
        "principal": "key:ck_1",
        "conversation_id": None,
        "input": {"message": "hi", "history_messages": 0},
        "environment": {"process": {"pid": 1}},
        "owner_user_id": None,
        "owner_api_key_id": str(uuid.uuid4()),
        "snapshot_id": None,
        "owner": "host:1",
    }
    _, columns = _run_insert_sql(False, False)
    values, started_at = _run_values(fields, columns)
    instance = Run(**fields)
    expected = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in columns]

    def plain(value):
        return value.obj if isinstance(value, Jsonb) else value

    started = [f.attname for f in columns].index("started_at")
    assert values[started] == started_at
    values[started] = expected[started]
    assert [plain(v) for v in values] == [plain(v) for v in expected]
