"""A turn's proof is made from the rows its recorder just wrote, as the recorder holds them
(RunRecorder.stored_rows), not read back: they must prove exactly as the rows read back do,
whatever the steps held (numbers jsonb rewrites, dates, odd keys, a payload in file storage)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.files.storage import default_storage
from django.db import transaction
from django_tenants.utils import schema_context

from engine.runs.recorder import INLINE_BYTES, RunRecorder
from engine.trust import verify_bundle
from engine.trust.canonical import canonical_json, chain
from engine.trust.proofs import proof_payload, step_record
from engine.trust.turns import _proof_inputs, _stored_inputs
from orchestrators.runtime import StepEvent

pytestmark = pytest.mark.django_db

# Floats Python writes with an exponent (jsonb gives 1e+16 back as the integer
# 10000000000000000), tiny ones, a negative zero, integers beyond 2**53, what json writes with
# default=str, keys json turns into strings its own way, astral and separator characters.
_AWKWARD = {
    "floats": [1e16, 1e23, 1.5e17, -2.5e20, 1e-7, 5e-324, -0.0, 0.1, 1.0, 123456.789, 1e308],
    "ints": [0, -1, 2**53, 2**60, -(2**70)],
    "when": dt.datetime(2026, 12, 6, 9, 30, tzinfo=dt.UTC),
    "tuple": (1, "two", 3.0),
    "text": 'caf\u00e9 \U0001f600 \u2028 \x01 "quoted" \\',
    "\U0001f600": {"nested": [{"deep": 9007199254740993.0}]},
}


class _Row:
    """A step's fields as a row (what step_record reads)."""

    def __init__(self, fields):
        data = {"inputs": fields["inputs"], "outputs": fields["outputs"], **fields["detail"]}
        self.__dict__.update(fields, data=data, payload="")


def _step(recorder, step_id, name, kind, detail, *, parent=None, duration=1.25):
    recorder.observe(
        StepEvent(name, "started", None, {"id": step_id, "parent": parent, "kind": kind})
    )
    recorder.observe(
        StepEvent(
            name,
            detail.pop("status", "completed"),
            duration,
            {"id": step_id, "parent": parent, "kind": kind, **detail},
        )
    )


def test_the_rows_a_recorder_wrote_prove_as_the_rows_read_back(world):
    recorder = RunRecorder(
        schema_name="org_alpha",
        orchestrator_id=None,
        orchestrator_slug="prover",
        config_hash="",
        trigger="rest",
        input={
            "message": "hi",
            "numbers": [1e16, 1e-5, 2**60],
            "keys": {1: "a", None: "b", 2.5: "c"},
        },
    )
    # Engine steps arrive JSON-ready (kept as they are); a tool's detail is walked first.
    _step(recorder, "s1", "prepare", "note", {"inputs": _AWKWARD, "outputs": {"n": 1e16}})
    _step(
        recorder,
        "s2",
        "lookup",
        "tool",
        {"inputs": {"args": _AWKWARD, 3: 4.0}, "outputs": {"result": 2**53 + 1}},
        parent="s1",
        duration=7,
    )
    _step(
        recorder,
        "s3",
        "big",
        "note",
        {"inputs": {"text": "z" * INLINE_BYTES, "f": 1e16}, "outputs": {}, "reads": ["text"]},
    )
    _step(
        recorder,
        "s4",
        "broken",
        "note",
        {
            "status": "failed",
            "inputs": {},
            "outputs": {},
            "error": "ValueError: no",
            "error_type": "ValueError",
            "stack": "Traceback ...",
        },
    )
    seen = []

    def then():
        rows = recorder.stored_rows()
        assert rows is not None
        seen.append((_stored_inputs(rows), _proof_inputs(recorder.run_id)))

    recorder.seal()
    try:
        with transaction.atomic():
            recorder.finish(status="succeeded", output="done \U0001f600", then=then)
            transaction.set_rollback(True)
        (memory_run, _, memory), (stored_run, _, stored) = seen[0]
        assert [r["seq"] for r in stored] == [1, 2, 3, 4]
        assert recorder.events[2].payload  # the large step is kept in file storage
        assert memory == stored
        assert canonical_json(memory) == canonical_json(stored)
        # The signer chains the rows' fields as they are; the verifier, the records a bundle
        # carries (made jsonable): the same proof.
        assert chain(memory) == verify_bundle.chain([step_record(_Row(r)) for r in stored])
        payloads = [
            proof_payload(run=run, organization="alpha", snapshot_hash="0" * 64, records=[])
            for run in (memory_run, stored_run)
        ]
        assert canonical_json(payloads[0]) == canonical_json(payloads[1])
    finally:
        with schema_context("org_alpha"):
            for row in recorder.events:
                if row.payload:
                    default_storage.delete(row.payload)


def test_a_resumed_run_is_read_back(world):
    recorder = RunRecorder(
        schema_name="org_alpha",
        orchestrator_id=None,
        orchestrator_slug="prover",
        config_hash="",
        trigger="rest",
    )
    recorder.seq_base = 3  # steps an earlier attempt wrote: not in this recorder's memory
    _step(recorder, "s1", "a", "note", {"inputs": {}, "outputs": {}})
    seen = []
    recorder.seal()
    with transaction.atomic():
        recorder.finish(status="succeeded", then=lambda: seen.append(recorder.stored_rows()))
        transaction.set_rollback(True)
    assert seen == [None]
