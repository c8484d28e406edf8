"""The turn pipeline: every trigger records a run with its steps, and the extension points fire."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import Client
from django_tenants.utils import schema_context

from cadence_site.errors import ApplicationError
from engine.models import Run
from engine.runs import pipeline

TOOL = '/tool calculator {"expression": "2+3"}'


def _run(run_id: str) -> tuple[Run, list[tuple]]:
    with schema_context("org_alpha"):
        run = Run.objects.get(pk=run_id)
        events = list(run.events.values_list("kind", "name", "outcome"))
    return run, events


def _completed_steps(events: list[tuple]) -> list[str]:
    return [name for kind, name, outcome in events if kind == "note" and outcome == "completed"]


def _invoke(client, instance, content: str):
    return client.post(
        f"/api/v1/orgs/alpha/orchestrators/{instance.id}/invoke/",
        {"messages": [{"role": "user", "content": content}]},
        format="json",
    )


def test_rest_invoke_records_a_run_with_its_steps_and_tool_calls(world, chat_orchestrator, as_key):
    response = _invoke(as_key(world.alpha.keys["member"]), chat_orchestrator["fast"], TOOL)

    assert response.status_code == 200, response.json()
    body = response.json()
    run, events = _run(body["run"])
    assert str(run.owner_api_key_id) == world.alpha.key_ids["member"]
    assert (run.status, run.trigger, run.orchestrator_id) == (
        "succeeded",
        "invoke",
        chat_orchestrator["fast"].id,
    )
    assert run.input == {"message": TOOL, "history_messages": 0}
    assert run.output == body["message"]["content"]
    assert run.usage == body["usage"]
    assert _completed_steps(events)[:2] == ["prepare_prompt", "agent"]
    assert ("tool_call", "calculator", "completed") in events
    with schema_context("org_alpha"):
        stored = run.events.get(kind="tool_call").data["outputs"]["result"]
    assert body["tool_calls"][0]["result"] == stored


def test_admin_try_it_records_a_run(world, chat_orchestrator):
    client = Client()
    client.force_login(world.alpha.users["member"])

    response = client.post(
        f"/orgs/alpha/admin/orchestrators/orchestratorinstance/{chat_orchestrator['fast'].pk}/try/",
        {"message": "ping"},
    )

    assert response.status_code == 302
    with schema_context("org_alpha"):
        run = Run.objects.filter(trigger="admin", orchestrator=chat_orchestrator["fast"]).get()
        steps = list(run.events.filter(kind="note", outcome="completed").values_list("name"))
    assert run.owner_user_id == world.alpha.users["member"].pk
    assert (run.status, run.output, run.principal) == (
        "succeeded",
        "Offline model. You said: ping",
        world.alpha.users["member"].get_username(),
    )
    assert steps[:3] == [("prepare_prompt",), ("agent",), ("finalize",)]


@pytest.mark.asyncio
async def test_websocket_turn_records_a_chat_run_and_stores_its_tool_calls(
    world, chat_orchestrator
):
    from chat.tests.test_ws import _make_conversation, _open, _until_done

    member = world.alpha.users["member"]
    conversation = await database_sync_to_async(_make_conversation)(
        chat_orchestrator["fast"], member
    )
    tab, connected, _ = await _open(conversation, member)
    assert connected
    await tab.send_json_to({"type": "message", "content": TOOL})
    done = (await _until_done(tab))[-1]
    await tab.disconnect()

    run, events = await database_sync_to_async(_run)(done["run"])
    assert (run.status, run.trigger, str(run.conversation_id)) == (
        "succeeded",
        "chat",
        conversation,
    )
    assert ("tool_call", "calculator", "completed") in events
    assert (run.owner_user_id, run.owner_api_key_id) == (member.pk, None)
    assert [c["name"] for c in done["tool_calls"]] == ["calculator"]


class _Probe(pipeline.TurnExtension):
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.calls: list[tuple] = []

    def run_fields(self, request, acquired):
        self.calls.append(("run_fields", request.trigger, acquired.slug))
        return {"principal": "probe"}

    async def before_model_call(self, turn, messages):
        self.calls.append(("before", messages[-1]["content"]))
        if self.refuse:
            raise ApplicationError("Over the token budget.", "budget_exceeded", status=429)

    async def after_model_call(self, turn, usage):
        self.calls.append(("after", usage.total_tokens))

    async def on_progress(self, turn):
        self.calls.append(("progress", "".join(turn.text)))

    def on_finish(self, turn, outcome):
        with schema_context("org_alpha"):
            exists = Run.objects.filter(pk=turn.run_id).exists()
        self.calls.append(("finish", outcome.status, exists))

    def after_write(self, turn, outcome):
        from django.db import connection

        self.calls.append(("written", outcome.status, connection.in_atomic_block))


def _squeezed(calls: list[tuple]) -> list[tuple]:
    """The calls with only the last heartbeat (the one at the end, which every turn sends): a
    turn slowed past PROGRESS_SECONDS by a loaded machine beats while it runs too."""
    last = max((i for i, call in enumerate(calls) if call[0] == "progress"), default=-1)
    return [call for i, call in enumerate(calls) if call[0] != "progress" or i == last]


@pytest.fixture
def probe():
    made: list[_Probe] = []

    def make(**kwargs) -> _Probe:
        made.append(pipeline.register(_Probe(**kwargs)))
        return made[-1]

    yield make
    for extension in made:
        pipeline.unregister(extension)


def test_extensions_see_every_model_call_the_progress_and_the_finish(
    world, chat_orchestrator, as_key, probe
):
    seen = probe()

    body = _invoke(as_key(world.alpha.keys["member"]), chat_orchestrator["fast"], "hi").json()

    run, _ = _run(body["run"])
    assert run.principal == "probe"
    assert _squeezed(seen.calls) == [
        ("run_fields", "invoke", "chatbot"),
        ("before", "hi"),
        ("after", body["usage"]["total_tokens"]),
        ("progress", "Offline model. You said: hi"),
        ("finish", "succeeded", True),
        ("written", "succeeded", False),  # after the run's transaction
    ]


def test_an_extension_refusing_a_model_call_fails_the_turn_with_its_error(
    world, chat_orchestrator, as_key, probe
):
    seen = probe(refuse=True)

    response = _invoke(as_key(world.alpha.keys["member"]), chat_orchestrator["fast"], "hi")

    assert (response.status_code, response.json()["error"]["code"]) == (429, "budget_exceeded")
    with schema_context("org_alpha"):
        run = Run.objects.filter(orchestrator=chat_orchestrator["fast"]).get()
    assert (run.status, run.error) == ("failed", "budget_exceeded: Over the token budget.")
    # No call was made, so there is nothing to settle.
    assert _squeezed(seen.calls) == [
        ("run_fields", "invoke", "chatbot"),
        ("before", "hi"),
        ("progress", ""),
        ("finish", "failed", True),
        ("written", "failed", False),
    ]


def test_after_write_runs_when_the_runs_write_failed(world, committed_db, chat_orchestrator, probe):
    """What must be written whatever became of the run (a turn's usage) is, even when the
    transaction that records the run rolled back."""
    seen = probe()

    def store(outcome) -> None:
        raise RuntimeError("the reply could not be stored")

    outcome = invoke_turn(chat_orchestrator["fast"], store=store)

    run, _ = _run(outcome.run_id) if _stored(outcome.run_id) else (None, None)
    assert run is None or run.status != "succeeded"  # the outcome's write rolled back
    assert seen.calls[-2:] == [("finish", "succeeded", True), ("written", "succeeded", False)]


def invoke_turn(orchestrator, *, store=None, **request) -> pipeline.TurnOutcome:
    """A turn of alpha's `orchestrator` through the pipeline, as an invoke, from sync code;
    `store` as the pipeline's (inside the transaction that records the run); `request`: more
    TurnRequest fields."""
    from asgiref.sync import async_to_sync

    return async_to_sync(pipeline.turn_run)(
        pipeline.TurnRequest(
            **{
                "schema_name": "org_alpha",
                "org_slug": "alpha",
                "ref": str(orchestrator.id),
                "message": "hi",
                "history": [],
                "trigger": "invoke",
                **request,
            }
        ),
        store=store,
    )


def _stored(run_id: str) -> bool:
    with schema_context("org_alpha"):
        return Run.objects.filter(pk=run_id).exists()


def test_an_orchestrator_that_cannot_be_acquired_records_no_run(world, committed_db):
    import uuid

    from asgiref.sync import async_to_sync

    with schema_context("org_alpha"):
        before = Run.objects.count()

    outcome = async_to_sync(pipeline.turn_run)(
        pipeline.TurnRequest(
            schema_name="org_alpha",
            org_slug="alpha",
            ref=str(uuid.uuid4()),
            message="hi",
            history=[],
            trigger="invoke",
        )
    )

    assert (outcome.status, outcome.error.code, outcome.recorded) == (
        "failed",
        "orchestrator_not_found",
        False,
    )
    with schema_context("org_alpha"):
        assert Run.objects.count() == before


def test_a_turns_statements_are_the_runs_writes_its_proof_and_its_usage(
    world, committed_db, chat_orchestrator, settings, monkeypatch
):
    """What one recorded turn sends the database once its runtime is pooled: the run's row
    (its orchestrator's team and plugins read by the INSERT), the outcome's transaction (the
    proof inside a savepoint: all sent together, BEGIN and COMMIT included:
    cadence_site/pipelined.py),
    the usage record and the log's sequencing, with the schema set once (the usage table is
    named in full: no SET to public and back)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from engine.alerts import turns as alert_turns
    from tenants.models import ApiKey

    settings.CADENCE_LIMITS_CACHE_SECONDS = 60  # as served (tests read limits every time)
    # The warm-up's answer on alert rules is kept (1 s by default: a slow machine's second turn
    # read it again, a savepoint and a SELECT more).
    monkeypatch.setattr(alert_turns, "RULES_TTL", 60.0)
    alert_turns.rules_forget()  # read again by the warm-up, kept for the measured turn
    key = ApiKey.objects.get(pk=world.alpha.key_ids["member"])
    # As /v1 asks: the caller's organization and key known, so its budgets are (once read).
    caller = {
        "trigger": "openai",
        "principal": f"key:{key.prefix}",
        "org_id": world.alpha.org.id,
        "key_id": str(key.id),
        "owner_api_key_id": str(key.id),
    }
    invoke_turn(chat_orchestrator["fast"], **caller)  # the runtime pooled, the budgets read
    connection.close()  # as a pool thread's first call: on the public schema

    with CaptureQueriesContext(connection) as queries:
        outcome = invoke_turn(chat_orchestrator["fast"], **caller)

    assert outcome.status == "succeeded"
    kinds = [" ".join(q["sql"].split()[: 4 if q["sql"].startswith("SET") else 3]) for q in queries]
    # Each of the turn's two database calls opens its connection here (tests have no pool);
    # served, a pooled connection keeps its search_path and the second SET is rarely sent.
    # The outcome's transaction is begun and committed by its batch (no extension writes in
    # it): Django still logs the BEGIN of its atomic block and its COMMIT, which sends nothing.
    assert kinds == [
        'SET search_path = "org_alpha","public"',
        'INSERT INTO "engine_run"',
        "BEGIN",
        'SET search_path = "org_alpha","public"',
        "BEGIN",
        'UPDATE "engine_run" SET',
        'INSERT INTO "engine_runevent"',
        "SAVEPOINT cadence_guarded",
        "INSERT INTO public.limits_usageday",
        "RELEASE SAVEPOINT cadence_guarded",
        "SAVEPOINT cadence_guarded",
        "INSERT INTO trust_executionproof",
        "RELEASE SAVEPOINT cadence_guarded",
        "COMMIT",
        "COMMIT",
        "SELECT h.size, h.frontier,",
        "WITH head AS",
    ]
