"""Every trigger's run points at its definition snapshot and ends with a proof in the log."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from django_tenants.utils import schema_context

from engine.models import Run
from engine.trust import signing
from engine.trust.bundle import bundle_build
from engine.trust.models import ExecutionProof, LogLeaf
from engine.trust.snapshots import orchestrator_definition
from engine.trust.verify_bundle import digest, verify_bundle

TOOL = '/tool calculator {"expression": "2+3"}'


def _proven(run_id: str) -> tuple[Run, dict]:
    with schema_context("org_alpha"):
        run = Run.objects.select_related("orchestrator__llm_config").get(pk=run_id)
        proof = _in_log(run.id)
        assert LogLeaf.objects.get(index=proof.log_index).digest == proof.digest
        # The payload column is written from the signed canonical text: the same JSON.
        assert proof.payload == json.loads(proof.canonical)
        return run, bundle_build(run=run, proof=proof)


def _in_log(run_id, seconds: float = 10.0) -> ExecutionProof:
    """The run's proof once the log has taken it in by itself (a served turn's within
    CADENCE_PROOF_SEQUENCE_SECONDS of its commit), without reading its entry (which would take
    it in)."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        proof = ExecutionProof.objects.get(run_id=run_id)
        if proof.log_index is not None or time.monotonic() > deadline:
            return proof
        time.sleep(0.02)


def test_a_rest_invoke_run_is_pinned_to_its_snapshot_and_proven(world, chat_orchestrator, as_key):
    instance = chat_orchestrator["fast"]
    response = as_key(world.alpha.keys["member"]).post(
        f"/api/v1/orgs/alpha/orchestrators/{instance.id}/invoke/",
        {"messages": [{"role": "user", "content": TOOL}]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    run, bundle = _proven(response.json()["run"])
    with schema_context("org_alpha"):
        assert run.snapshot_id == digest(orchestrator_definition(run.orchestrator))
    assert verify_bundle(bundle, signing.keyring().verifiers).failures == []
    kinds = [s["kind"] for s in bundle["steps"]]
    assert "tool_call" in kinds and "llm_call" in kinds
    # A tool call is one step (engine/runs/recorder.py): its arguments in, its result out.
    tool = next(s for s in bundle["steps"] if s["kind"] == "tool_call")
    assert tool["inputs"] == {"arguments": {"expression": "2+3"}}
    assert tool["outputs"]["result"] is not None
    assert bundle["output"] == response.json()["message"]["content"]


@pytest.mark.asyncio
async def test_a_chat_run_is_pinned_and_proven_too(world, chat_orchestrator):
    from chat.tests.test_ws import _make_conversation, _open, _until_done

    member = world.alpha.users["member"]
    conversation = await database_sync_to_async(_make_conversation)(
        chat_orchestrator["fast"], member
    )
    tab, connected, _ = await _open(conversation, member)
    assert connected
    await tab.send_json_to({"type": "message", "content": "hello"})
    done = (await _until_done(tab))[-1]
    await tab.disconnect()
    run, bundle = await database_sync_to_async(_proven)(done["run"])
    assert run.trigger == "chat" and run.snapshot_id is not None
    assert verify_bundle(bundle, signing.keyring().verifiers).failures == []


def test_an_edit_pins_later_runs_to_a_new_snapshot_and_leaves_old_runs_on_theirs(
    world, chat_orchestrator, as_key, django_capture_on_commit_callbacks
):
    from orchestrators.tasks import instance_build

    instance = chat_orchestrator["fast"]
    api = as_key(world.alpha.keys["owner"])

    def invoke():
        response = api.post(
            f"/api/v1/orgs/alpha/orchestrators/{instance.id}/invoke/",
            {"messages": [{"role": "user", "content": "hi"}]},
            format="json",
        )
        assert response.status_code == 200, response.json()
        return _proven(response.json()["run"])[0]

    before = invoke()
    edited = api.patch(
        f"/api/v1/orgs/alpha/orchestrators/{instance.id}/",
        {"system_prompt": "Answer tersely."},
        format="json",
    )
    assert edited.status_code == 200, edited.json()
    assert (
        instance_build(
            schema_name="org_alpha",
            instance_id=str(instance.id),
            expected_hash=edited.json()["config_hash"],
        )
        == "ready"
    )
    after = invoke()
    assert after.snapshot_id != before.snapshot_id
    with schema_context("org_alpha"):
        assert Run.objects.get(pk=before.pk).snapshot.value["system_prompt"] != "Answer tersely."
        assert Run.objects.get(pk=after.pk).snapshot.value["system_prompt"] == "Answer tersely."


def test_the_log_stays_open_while_a_run_is_written_its_proof_goes_in_after_the_commit(
    world, committed_db, chat_orchestrator
):
    """Every run of the organization goes into one log, whose head a sequencing locks. While the
    run's transaction writes what the caller stores beside it (a chat reply), another connection
    can still lock the log's head: the proof is taken into the log after that commit."""
    import psycopg
    from django.db import connection

    from cadence_site.testing import test_database_url
    from engine.runs.tests.test_pipeline import invoke_turn
    from engine.trust import log
    from engine.trust.models import LogHead

    with schema_context("org_alpha"):
        log._head(lock=False)  # the organization's log exists: there is a head to lock
    seen: list[str] = []

    def store(outcome) -> None:
        with psycopg.connect(test_database_url(), autocommit=False) as other:
            other.execute("SET lock_timeout = '2s'")
            other.execute(f"SET search_path = {connection.schema_name}")
            try:
                other.execute(f"SELECT 1 FROM {LogHead._meta.db_table} WHERE id = 1 FOR UPDATE")
                seen.append("head free")
            except psycopg.errors.LockNotAvailable:
                seen.append("head locked")
            other.rollback()

    outcome = invoke_turn(chat_orchestrator["fast"], store=store)

    assert outcome.status == "succeeded"
    assert seen == ["head free"]
    run, bundle = _proven(outcome.run_id)
    assert verify_bundle(bundle, signing.keyring().verifiers).failures == []


def test_a_proof_the_database_refuses_leaves_the_run_recorded_with_its_steps(
    world, committed_db, chat_orchestrator, monkeypatch, caplog
):
    """The proof goes with the run's outcome and steps (one round trip, in a savepoint of its
    own: cadence_site/pipelined.py); refused, it is rolled back alone and logged, and the run
    and its steps are committed, unproven."""
    import logging

    from engine.models import RunEvent
    from engine.runs.tests.test_pipeline import invoke_turn
    from engine.trust import proofs

    original = proofs.proof_insert
    # A key id longer than its column: the database refuses the INSERT.
    monkeypatch.setattr(proofs, "proof_insert", lambda row: original(dict(row, key_id="x" * 9)))
    with caplog.at_level(logging.ERROR, logger="cadence_site.pipelined"):
        outcome = invoke_turn(chat_orchestrator["fast"], message=TOOL)

    assert outcome.status == "succeeded"
    with schema_context("org_alpha"):
        run = Run.objects.get(pk=outcome.run_id)
        try:
            assert run.status == "succeeded" and run.output == outcome.content
            assert RunEvent.objects.filter(run_id=run.id).filter(kind="tool_call").exists()
            assert not ExecutionProof.objects.filter(run_id=run.id).exists()
        finally:
            run.delete()
    assert [r.getMessage() for r in caplog.records] == [
        f"the proof of run {outcome.run_id} not written"
    ]


def _invoke(orchestrator):
    """A turn of alpha's `orchestrator` as a served invoke runs it (awaited on a loop: its
    database calls are green)."""
    from engine.runs import pipeline

    return pipeline.TurnRequest(
        schema_name="org_alpha",
        org_slug="alpha",
        ref=str(orchestrator.id),
        message="hi",
        history=[],
        trigger="invoke",
    )


@pytest.mark.asyncio
async def test_a_burst_of_served_turns_goes_into_the_log_in_fewer_sequencings_than_turns(
    world, committed_db, chat_orchestrator, settings, monkeypatch
):
    """Turns written by green calls on a server's loop: each proof is taken into the log
    within CADENCE_PROOF_SEQUENCE_SECONDS of its commit, with the others committed meanwhile."""
    import asyncio

    from engine.runs import pipeline
    from engine.trust import log

    settings.CADENCE_PROOF_SEQUENCE_SECONDS = 2.0
    sequencings: list[int] = []
    original = log.log_sequence

    def counted(**kwargs):
        sequencings.append(original(**kwargs))
        return sequencings[-1]

    monkeypatch.setattr(log, "log_sequence", counted)

    outcomes = await asyncio.gather(
        *(pipeline.turn_run(_invoke(chat_orchestrator["fast"])) for _ in range(5))
    )
    assert [o.status for o in outcomes] == ["succeeded"] * 5

    def waiting() -> int:
        with schema_context("org_alpha"):
            ids = [o.run_id for o in outcomes]
            return ExecutionProof.objects.filter(run_id__in=ids, log_index=None).count()

    assert sequencings == [] and await database_sync_to_async(waiting)() == 5  # not yet

    def proofs():
        with schema_context("org_alpha"):
            return [_in_log(o.run_id) for o in outcomes]

    found = await database_sync_to_async(proofs)()
    assert all(p.log_index is not None for p in found)
    assert len(sequencings) == 1 and sequencings[0] >= 5  # one, for all of them


def test_a_loop_that_ends_with_a_sequencing_due_keeps_nobody_waiting(
    world, committed_db, chat_orchestrator, settings
):
    """A server loop that stops with a gathered sequencing due or under way holds nothing the
    next sequencing needs (no process lock in a green call), and the proof is taken in by that
    one at the latest."""
    import asyncio
    import threading

    from engine.runs import pipeline
    from engine.trust.turns import sequence

    settings.CADENCE_PROOF_SEQUENCE_SECONDS = 0.05

    async def turn_then_stop():
        outcome = await pipeline.turn_run(_invoke(chat_orchestrator["fast"]))
        await asyncio.sleep(0.05)  # the loop ends about as the sequencing begins
        return outcome

    outcome = asyncio.run(turn_then_stop())
    assert outcome.status == "succeeded"
    done = threading.Event()
    later = threading.Thread(target=lambda: (sequence("org_alpha"), done.set()), daemon=True)
    later.start()
    assert done.wait(30), "a later sequencing waited for a lock the ended loop kept"
    with schema_context("org_alpha"):
        assert ExecutionProof.objects.get(run_id=outcome.run_id).log_index is not None
