"""Proofs, the log and bundles in the database; tampering of each kind fails with its reason."""

from __future__ import annotations

import copy
import json

import pytest
from django.db import IntegrityError, connection, transaction
from django_tenants.utils import schema_context

from engine.trust import log, signing
from engine.trust.bundle import bundle_build
from engine.trust.models import ExecutionProof, LogLeaf
from engine.trust.verify_bundle import verify_bundle

pytestmark = pytest.mark.django_db


def _bundle(run, proof, since=()):
    with schema_context("org_alpha"):
        return bundle_build(run=run, proof=proof, since=since)


def _keys():
    return signing.keyring().verifiers


def test_a_proven_run_verifies(proven_run):
    run, proof = proven_run(steps=4)
    bundle = _bundle(run, proof)
    report = verify_bundle(bundle, _keys())
    assert report.failures == []
    assert [name for name, _, _ in report.checks] == [
        "identity",
        "snapshot",
        "input and output",
        "step records",
        "signature",
        "transparency log",
    ]
    payload = bundle["proof"]["payload"]
    assert payload["run_id"] == str(run.id)
    assert payload["organization"] == "alpha"
    assert [s["seq"] for s in payload["steps"]] == [1, 2, 3, 4]
    assert payload["chain_head"] == payload["steps"][-1]["record_hash"]
    with schema_context("org_alpha"):
        stored = ExecutionProof.objects.get(run_id=run.id)
    # The payload column is written from the signed canonical text: the same JSON.
    assert stored.payload == json.loads(stored.canonical) == payload


def test_proving_twice_returns_the_same_proof_and_one_log_entry(proven_run):
    from engine.trust.proofs import proof_create

    run, proof = proven_run()
    with schema_context("org_alpha"):
        again = proof_create(run=run, snapshot_hash=proof.payload["snapshot"])
        assert again.pk == proof.pk
        assert LogLeaf.objects.filter(run_id=run.id).count() == 1


def test_proofs_and_log_entries_are_append_only(proven_run):
    run, proof = proven_run()
    with schema_context("org_alpha"):
        for query in (
            ExecutionProof.objects.filter(pk=proof.pk),
            LogLeaf.objects.filter(run_id=run.id),
        ):
            with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
                query.update(created_at=proof.created_at)
            with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
                query.delete()


@pytest.mark.parametrize(
    ("tamper", "check", "reason"),
    [
        (lambda b: b["steps"][1]["inputs"].update(n=99), "step records", "step 2 differs"),
        (lambda b: b["steps"].pop(1), "step records", "3 step records"),
        (lambda b: b["steps"].reverse(), "step records", "step 1 differs"),
        (lambda b: b.update(output="41"), "input and output", "output"),
        (lambda b: b["snapshot"]["definition"].update(flow="other"), "snapshot", "hashes to"),
        (lambda b: b["proof"]["payload"].update(status="failed"), "signature", "does not hash"),
        (lambda b: b["log"]["inclusion"].append("00" * 32), "transparency log", "longer than"),
    ],
)
def test_a_tampered_bundle_fails_with_its_reason(proven_run, tamper, check, reason):
    run, proof = proven_run(steps=4)
    bundle = copy.deepcopy(_bundle(run, proof))
    tamper(bundle)
    report = verify_bundle(bundle, _keys())
    failures = [f for f in report.failures if f.startswith(check)]
    assert failures and reason in failures[0], report.failures


def test_a_forged_tree_head_fails(proven_run):
    run, proof = proven_run()
    bundle = _bundle(run, proof)
    text, _, signatures = bundle["log"]["checkpoint"].rpartition("\n\n")
    lines = text.split("\n")
    lines[1] = str(int(lines[1]) + 1)  # claim a bigger tree under the same signature
    bundle["log"]["checkpoint"] = "\n".join(lines) + "\n\n" + signatures
    assert "does not verify" in verify_bundle(bundle, _keys()).failures[0]
    # a tree head signed by a key nobody trusts
    rogue = signing.Signer.generate(signing.keyring().current.name)
    original = _bundle(run, proof)["log"]["checkpoint"]
    body = original.rpartition("\n\n")[0] + "\n"
    original_forged = rogue.sign_note(body)
    bundle["log"]["checkpoint"] = original_forged
    assert "no signature by a trusted key" in verify_bundle(bundle, _keys()).failures[0]


def test_a_changed_step_record_in_the_database_fails_verification(proven_run):
    from engine.models import RunEvent

    run, proof = proven_run()
    with schema_context("org_alpha"):
        RunEvent.objects.filter(run=run, seq=2).update(data={"inputs": {"n": 1000}})
    report = verify_bundle(_bundle(run, proof), _keys())
    assert report.failures == [
        "step records: step 2 differs from the proof: inputs_hash, record_hash"
    ]


def test_the_log_grows_with_consistent_signed_heads(proven_run):
    from engine.trust.verify_bundle import open_checkpoint, verify_consistency

    run, proof = proven_run()
    with schema_context("org_alpha"):
        first = log.tree_head_sign()
    later_run, later = proven_run()
    with schema_context("org_alpha"):
        second = log.tree_head_sign()
        assert second.size == first.size + 1
        old = open_checkpoint(first.note, _keys())
        new = open_checkpoint(second.note, _keys())
        assert old.origin == "localhost/cadence/orgs/alpha/log"
        proof_nodes = log.log_consistency(size1=old.size, size2=new.size)
        verify_consistency(old.size, new.size, proof_nodes, old.root, new.root)
        # the head is not re-signed while the tree has not grown
        assert log.tree_head_sign().pk == second.pk
        assert log.log_audit() == []


def test_logs_are_per_organization(proven_run):
    run_a, proof_a = proven_run()
    run_b, proof_b = proven_run(schema="org_bravo")
    with schema_context("org_bravo"):
        assert LogLeaf.objects.filter(run_id=run_a.id).exists() is False
        assert log.log_origin() == "localhost/cadence/orgs/bravo/log"
        bundle_b = bundle_build(run=run_b, proof=proof_b)
    assert bundle_b["organization"] == "bravo"
    assert verify_bundle(bundle_b, _keys()).failures == []


def test_a_removed_run_is_reported_by_the_audit(proven_run):
    from engine.models import Run

    run, proof = proven_run()
    with schema_context("org_alpha"):
        Run.objects.filter(pk=run.pk).delete()
        problems = log.log_audit()
    assert f"log entry {proof.log_index}: run {run.id} was removed" in problems


def test_a_rewritten_log_is_caught_by_a_witnessed_checkpoint(proven_run):
    """Even a rewrite of the whole log, re-signed with the real key, cannot hide from a witness."""
    runs = [proven_run() for _ in range(3)]
    with schema_context("org_alpha"):
        witnessed = log.tree_head_sign().note
        size = log.log_size()
        honest = bundle_build(run=runs[-1][0], proof=runs[-1][1], since=[size])
        assert verify_bundle(honest, _keys(), [witnessed]).failures == []
        # The attacker owns the database: triggers off, the log replaced by one without run 0.
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute("DELETE FROM trust_logleaf; DELETE FROM trust_lognode")
            cursor.execute("DELETE FROM trust_loghead; DELETE FROM trust_treehead")
            cursor.execute("DELETE FROM trust_executionproof")
            cursor.execute("SET LOCAL session_replication_role = origin")
        from engine.trust.proofs import proof_create

        survivors = [proof_create(run=r, snapshot_hash=p.payload["snapshot"]) for r, p in runs[1:]]
        for pad in range(size - len(survivors) + 1):  # a bigger tree than the witness saw
            log.log_append(entries=[(f"{pad + 1:064x}", runs[0][0].id)])
        forged = bundle_build(run=runs[-1][0], proof=survivors[-1], since=[size])
    assert verify_bundle(forged, _keys()).failures == []  # alone, the forgery looks fine
    failures = verify_bundle(forged, _keys(), [witnessed]).failures
    assert len(failures) == 1 and failures[0].startswith(f"witness (size {size})")


def test_a_large_payload_kept_in_file_storage_is_covered_by_the_proof(make_run, settings, tmp_path):
    import json

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from engine.models import RunEvent
    from engine.trust.proofs import proof_create

    run, snapshot = make_run(steps=1)
    whole = {"inputs": {"text": "z" * 50_000}, "outputs": {"ok": True}}
    with schema_context("org_alpha"):
        name = default_storage.save(f"test-payloads/{run.id}.json", ContentFile(json.dumps(whole)))
        RunEvent.objects.filter(run=run, seq=1).update(
            payload=name, data={"inputs": {"truncated": True}, "outputs": {"ok": True}}
        )
        proof = proof_create(run=run, snapshot_hash=snapshot.hash)
        bundle = bundle_build(run=run, proof=proof)
    try:
        assert bundle["steps"][0]["inputs"] == {"text": "z" * 50_000}
        assert verify_bundle(bundle, _keys()).failures == []
        with default_storage.open(name, "w") as fh:  # someone edits the stored payload
            fh.write(json.dumps({**whole, "inputs": {"text": "forged"}}))
        assert verify_bundle(_bundle(run, proof), _keys()).failures == [
            "step records: step 1 differs from the proof: inputs_hash, record_hash"
        ]
    finally:
        default_storage.delete(name)
