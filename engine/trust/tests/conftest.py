from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django_tenants.utils import schema_context

from chat.tests.conftest import chat_orchestrator  # noqa: F401
from engine.trust.signing import Signer


@pytest.fixture(scope="session")
def _test_signer() -> Signer:
    return Signer.generate("cadence.test/proofs")


@pytest.fixture(autouse=True)
def signing_keys(settings, _test_signer):
    """One known key per session (never the checkout's var/signing_keys)."""
    settings.CADENCE_SIGNING_KEYS = _test_signer.serialize()
    settings.CADENCE_SIGNING_RETIRED_KEYS = ""
    settings.CADENCE_WITNESS_FILE = ""
    settings.CADENCE_WITNESS_URL = ""
    return _test_signer


@pytest.fixture
def make_run(world):
    """A finished run in alpha with step records, its snapshot stored; returns (run, snapshot)."""
    from engine.models import Run, RunEvent
    from engine.trust.snapshots import snapshot_store

    def make(
        *,
        steps: int = 3,
        output: str = "42",
        definition: dict | None = None,
        schema="org_alpha",
        owner_key: str | None = None,
    ):
        with schema_context(schema):
            snapshot = snapshot_store(
                definition=definition or {"format": "test", "flow": {"steps": [{"then": "a"}]}}
            )
            started = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
            run = Run.objects.create(
                orchestrator_slug="prover",
                trigger="rest",
                status="succeeded",
                input={"message": "what is 6 * 7?"},
                output=output,
                finished_at=started + dt.timedelta(seconds=2),
                # Members read only their own runs (engine/runs/selectors.py): a key to own it.
                owner_api_key_id=owner_key,
            )
            Run.objects.filter(pk=run.pk).update(started_at=started)
            run.refresh_from_db()
            RunEvent.objects.bulk_create(
                [
                    RunEvent(
                        run=run,
                        seq=i + 1,
                        kind="tool_call" if i % 2 else "step",
                        name=f"step-{i + 1}",
                        outcome="completed",
                        duration_ms=1.5 * (i + 1),
                        data={"inputs": {"n": i}} if i % 2 else {"outputs": {"x": i}},
                        at=started + dt.timedelta(milliseconds=100 * i),
                    )
                    for i in range(steps)
                ]
            )
            return run, snapshot

    return make


@pytest.fixture
def proven_run(make_run):
    from engine.trust.proofs import proof_create

    def prove(**kwargs):
        run, snapshot = make_run(**kwargs)
        with schema_context(kwargs.get("schema", "org_alpha")):
            return run, proof_create(run=run, snapshot_hash=snapshot.hash)

    return prove


def new_id() -> str:
    return str(uuid.uuid4())
