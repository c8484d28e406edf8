"""Proofs written with their runs and taken into the log after the commit (engine/trust/log.py
`log_sequence`, engine/trust/turns.py `sequence`): every proof once, in order, from concurrent
writers; what a crash left waiting is taken in by the next reader; the one change a proof row
allows is its log index, once."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import DataError, IntegrityError, connection, transaction
from django_tenants.utils import schema_context

from engine.trust import log, signing
from engine.trust.bundle import bundle_build
from engine.trust.models import ExecutionProof, LogLeaf
from engine.trust.proofs import proof_prepare, proof_write
from engine.trust.turns import sequence
from engine.trust.verify_bundle import verify_bundle


def _written(make_run, n: int) -> list:
    """n finished runs whose proofs are written (committed) and not yet in the log."""
    made = []
    for _ in range(n):
        run, snapshot = make_run()
        with schema_context("org_alpha"), transaction.atomic():
            assert proof_write(proof_prepare(run=run, snapshot_hash=snapshot.hash))
        made.append(run)
    return made


def _proofs(runs) -> list[ExecutionProof]:
    with schema_context("org_alpha"):
        return [ExecutionProof.objects.get(run_id=run.id) for run in runs]


def _audit_of(runs) -> list[str]:
    """The audit's problems about these runs' entries, or any proof left outside the log (other
    tests on this committed database leave entries of runs they removed, and tree heads signed
    with their own keys)."""
    with schema_context("org_alpha"):
        problems = log.log_audit()
    ids = {str(run.id) for run in runs}
    return [p for p in problems if any(i in p for i in ids) or "never taken" in p]


def test_concurrent_runs_proofs_are_each_taken_into_the_log_once(
    committed_db, make_run, signing_keys
):
    with schema_context("org_alpha"):
        log.log_sequence()  # what earlier tests left waiting
        before = log.log_size()
    runs = _written(make_run, 24)
    assert all(p.log_index is None for p in _proofs(runs))
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def finisher(direct: bool) -> None:
        """Half as this process's finishers do; half straight to the database, as other
        processes' would (only the log head's lock between them)."""
        try:
            start.wait()
            for _ in range(3):
                if direct:
                    with schema_context("org_alpha"):
                        log.log_sequence(limit=5)
                else:
                    sequence("org_alpha")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=finisher, args=(i % 2 == 0,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    proofs = _proofs(runs)
    indices = sorted(p.log_index for p in proofs)
    assert indices == list(range(before, before + 24))  # each once, no gap
    with schema_context("org_alpha"):
        assert log.log_size() == before + 24
        leaves = dict(LogLeaf.objects.filter(index__gte=before).values_list("index", "digest"))
        assert {p.log_index: p.digest for p in proofs} == leaves
        assert _audit_of(runs) == []
        run = runs[5]
        bundle = bundle_build(run=run, proof=proofs[5])
    assert verify_bundle(bundle, signing.keyring().verifiers).failures == []


def test_a_proof_a_crash_left_outside_the_log_is_taken_in_when_read(
    committed_db, make_run, signing_keys, as_key, world
):
    """Written with its run, never sequenced (the process died between the run's commit and
    its sequencing): its proof, bundle and inclusion endpoints take it in."""
    (run,) = _written(make_run, 1)
    (proof,) = _proofs([run])
    assert proof.log_index is None

    client = as_key(world.alpha.keys["owner"])
    response = client.get(f"/api/v1/orgs/alpha/transparency/inclusion/?run={run.id}")

    assert response.status_code == 200, response.json()
    (proof,) = _proofs([run])
    assert response.json()["leaf_index"] == proof.log_index is not None
    assert _audit_of([run]) == []


def test_a_signed_tree_head_takes_in_what_waits(committed_db, make_run, signing_keys):
    (run,) = _written(make_run, 1)
    with schema_context("org_alpha"):
        head = log.tree_head_sign()
    (proof,) = _proofs([run])
    assert proof.log_index is not None and proof.log_index < head.size


def test_the_audit_reports_a_proof_left_outside_the_log(
    committed_db, make_run, signing_keys, monkeypatch
):
    from datetime import timedelta

    (run,) = _written(make_run, 1)
    monkeypatch.setattr(log, "SEQUENCE_GRACE", timedelta(0))
    with schema_context("org_alpha"):
        problems = log.log_audit()
        log.log_sequence()
        after = log.log_audit()
    assert any("never taken into the log" in p for p in problems), problems
    assert not any("never taken into the log" in p for p in after), after


@pytest.mark.django_db
def test_a_proofs_log_index_is_set_once_and_nothing_else_changes(make_run, signing_keys):
    (run,) = _written(make_run, 1)
    with schema_context("org_alpha"):
        proofs = ExecutionProof.objects.filter(run_id=run.id)
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            proofs.update(log_index=10**9, signature="forged")
        log.log_sequence()
        index = proofs.get().log_index
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            proofs.update(log_index=index + 1)
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            proofs.delete()
        assert proofs.get().log_index == index


@pytest.mark.django_db
def test_a_guarded_proof_write_is_one_query_and_a_refused_one_leaves_the_transaction_whole(
    make_run, signing_keys
):
    """The run's transaction writes its proof inside a savepoint sent with the INSERT (one round
    trip): written once per run; a proof the database refuses is rolled back to the savepoint
    and the run's own writes in that transaction stand."""
    from django.test.utils import CaptureQueriesContext

    from engine.models import Run
    from engine.trust.proofs import proof_write_guarded

    run, snapshot = make_run()
    with schema_context("org_alpha"), transaction.atomic():
        row = proof_prepare(run=run, snapshot_hash=snapshot.hash)
        with CaptureQueriesContext(connection) as queries:
            assert proof_write_guarded(row) is True
        assert len(queries) == 1
        assert queries[0]["sql"].startswith('SAVEPOINT "cadence_proof"; INSERT INTO')
        assert proof_write_guarded(dict(row, id=uuid.uuid4())) is False  # proven already

    other, snapshot = make_run()
    with schema_context("org_alpha"), transaction.atomic():
        Run.objects.filter(pk=other.pk).update(output="changed in the run's transaction")
        refused = dict(proof_prepare(run=other, snapshot_hash=snapshot.hash), key_id="x" * 9)
        with pytest.raises(DataError):
            proof_write_guarded(refused)
        assert Run.objects.get(pk=other.pk).output == "changed in the run's transaction"
    with schema_context("org_alpha"):
        assert Run.objects.get(pk=other.pk).output == "changed in the run's transaction"
        assert not ExecutionProof.objects.filter(run_id=other.pk).exists()
        assert ExecutionProof.objects.filter(run_id=run.pk).count() == 1
