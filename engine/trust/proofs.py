"""Execution proofs: a canonical payload over a run and the hash chain of its step records,
signed with the deployment's Ed25519 key, and appended to the organization's log.

The payload and chain are defined in engine/trust/verify_bundle.py (the standalone verifier),
so the signer and every verifier compute them with the same code.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from cadence_site import greendb
from cadence_site.prepared import bound_cursor
from engine.trust import log, signing
from engine.trust.canonical import canonical_json, chain, digest, jsonable
from engine.trust.models import ExecutionProof
from engine.trust.verify_bundle import PROOF_VERSION

_DATES = (dt.datetime, dt.date)  # jsonable writes them as isoformat() does


def _whole_data(event: Any) -> dict[str, Any]:
    """The step's data as recorded: from file storage when the row holds a truncated copy."""
    if getattr(event, "payload", ""):
        import json

        from django.core.files.storage import default_storage

        def read() -> bytes:
            with default_storage.open(event.payload) as fh:
                return fh.read()

        # File storage (S3): on a thread when the proof is written by a green call.
        return json.loads(greendb.blocking(read))
    return event.data if isinstance(event.data, dict) else {"value": event.data}


def step_fields(event: Any) -> dict[str, Any]:
    """A step's record as its row holds it, times as ISO text: step_record(event) is
    jsonable(step_fields(event)), and `chain` takes either (it walks the record once, making it
    jsonable only where it needs to), so the proof of a turn skips that walk."""
    data = _whole_data(event)
    started_at = getattr(event, "started_at", None)
    at = event.at
    return {
        "seq": event.seq,
        "parent_seq": getattr(event, "parent_seq", None),
        "kind": event.kind,
        "name": event.name,
        "outcome": event.outcome,
        "inputs": data.get("inputs"),
        "outputs": data.get("outputs"),
        "detail": {k: v for k, v in data.items() if k not in ("inputs", "outputs")},
        "error": event.error,
        "error_type": getattr(event, "error_type", ""),
        "started_at": started_at.isoformat() if isinstance(started_at, _DATES) else started_at,
        "duration_ms": event.duration_ms,
        "at": at.isoformat() if isinstance(at, _DATES) else at,
    }


def step_record(event: Any) -> dict[str, Any]:
    """The record a proof chains for one step (a RunEvent row): everything the row says, with
    its whole inputs and outputs (a large payload is read back from file storage, so the proof
    covers the file too)."""
    return jsonable(step_fields(event))


def run_records(run: Any) -> list[dict[str, Any]]:
    return [step_record(e) for e in run.events.order_by("seq")]


def run_io(run: Any) -> tuple[Any, Any]:
    return jsonable(run.input), jsonable(run.output)


def proof_payload(
    *,
    run: Any,
    organization: str,
    snapshot_hash: str,
    records: list[dict[str, Any]],
) -> dict[str, Any]:
    steps, head = chain(records)
    run_input, run_output = run_io(run)
    return {
        "version": PROOF_VERSION,
        "run_id": str(run.id),
        "organization": organization,
        "orchestrator": run.orchestrator_slug,
        "snapshot": snapshot_hash,
        "status": run.status,
        "input_hash": digest(run_input),
        "output_hash": digest(run_output),
        "started_at": jsonable(run.started_at),
        "finished_at": jsonable(run.finished_at),
        "steps": steps,
        "chain_head": head,
    }


def sign_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload's canonical bytes, their SHA-256 and its signature (canonicalized once)."""
    import base64
    import hashlib

    signer = signing.keyring().current
    canonical = canonical_json(payload)
    proof_digest = hashlib.sha256(canonical).hexdigest()
    return {
        "payload": payload,
        "canonical": canonical.decode(),
        "digest": proof_digest,
        "signature": base64.b64encode(signer.sign(bytes.fromhex(proof_digest))).decode(),
        "key_name": signer.name,
        "key_id": signer.key_id.hex(),
    }


def organization_slug() -> str:
    return log.organization_slug(connection.schema_name)


def proof_prepare(
    *, run: Any, snapshot_hash: str, records: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A finished run's proof, signed, as the row `proof_append` writes (all but its log index):
    the CPU of proving, with no lock held. `records`: the run's step records (step_record) or
    their fields (step_fields) when the caller has them (run_records(run) otherwise)."""
    payload = proof_payload(
        run=run,
        organization=organization_slug(),
        snapshot_hash=snapshot_hash,
        records=run_records(run) if records is None else records,
    )
    signed = sign_payload(payload)
    return {
        "id": uuid.uuid4(),
        "run_id": run.id,
        "canonical": signed["canonical"],
        "payload": payload,
        "digest": signed["digest"],
        "signature": signed["signature"],
        "key_name": signed["key_name"],
        "key_id": signed["key_id"],
        "created_at": timezone.now(),
    }


@transaction.atomic(savepoint=False)
def proof_append(row: dict[str, Any]) -> ExecutionProof:
    """Write a prepared proof and append its digest to the organization's log (one
    transaction: a proof without its log entry never exists). Idempotent per run: the run's
    existing proof is returned (checked under the log's lock, so two provers make one proof).
    The log's lock is held from here to the transaction's commit: a caller with more to write
    writes it first (engine/trust/turns.py appends last in the run's transaction).

    No savepoint of its own (nor log_append's): inside a caller's transaction a failure marks
    that transaction for rollback, and the caller that goes on after one (prove_run) holds the
    savepoint. Two round trips per nested block fewer on every turn's commit."""
    appended = log.log_append(entries=[(row["digest"], row["run_id"])], proof=row)
    if appended is None:  # proven already
        return ExecutionProof.objects.get(run_id=row["run_id"])
    proof = ExecutionProof(**row, log_index=appended[0])
    proof._state.adding, proof._state.db = False, "default"
    return proof


def proof_insert(row: dict[str, Any]) -> tuple[str, list[Any]]:
    """The INSERT of a prepared proof (proof_prepare) and its values; nothing when the run has one."""
    columns = list(row)
    # The payload column holds the payload; its canonical text (signed, in the row beside it)
    # is that JSON already: jsonb takes it rather than a second encoding.
    text = row.get("canonical")
    dumps = (lambda _payload: text) if isinstance(text, str) else None
    values = [Jsonb(v, dumps) if k == "payload" else v for k, v in row.items()]
    sql = (
        f"INSERT INTO {ExecutionProof._meta.db_table}"
        " ({}) VALUES ({}) ON CONFLICT (run_id) DO NOTHING".format(
            ", ".join(f'"{c}"' for c in columns), ", ".join(["%s"] * len(columns))
        )
    )
    return sql, values


def proof_write(row: dict[str, Any]) -> bool:
    """Write a prepared proof for the log to take in later (log.log_sequence): no lock, one
    statement, in the caller's transaction (a run's, so that the run and its proof are written
    together). Idempotent per run: False, and nothing written, when the run has a proof."""
    sql, values = proof_insert(row)
    with bound_cursor() as cursor:  # prepared: one text per set of columns
        return cursor.execute(sql, values).rowcount == 1


_SAVEPOINT = "cadence_proof"


def proof_write_guarded(row: dict[str, Any]) -> bool:
    """proof_write inside a savepoint of the caller's transaction, so that a proof the database
    refuses leaves the transaction (the run's) to commit without it: the savepoint, the INSERT
    and its release sent as one query (one round trip where transaction.atomic() takes three);
    on an error, rolled back to the savepoint and the error raised. Outside a transaction: in
    one of its own."""
    if not connection.in_atomic_block:
        with transaction.atomic():
            return proof_write(row)
    ops = connection.ops
    sql, values = proof_insert(row)
    # Client-side binding (Django's psycopg cursor): the three statements go as one simple
    # query; its results are read in order (the INSERT's is the second). Not prepared
    # (cadence_site/prepared.py): the three in one psycopg pipeline, the INSERT prepared, cost
    # ~50 us more Python CPU per proof and no less PostgreSQL CPU (measured: the SAVEPOINT and
    # RELEASE then go through the extended protocol, as much work as parsing the INSERT).
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"{ops.savepoint_create_sql(_SAVEPOINT)}; {sql};"
                f" {ops.savepoint_commit_sql(_SAVEPOINT)}",
                values,
            )
            cursor.cursor.nextset()
            return cursor.cursor.rowcount == 1
    except Exception:
        from psycopg import pq

        status = connection.connection.info.transaction_status
        if status == pq.TransactionStatus.INERROR:  # the savepoint stands: back to it
            connection.savepoint_rollback(_SAVEPOINT)
            connection.savepoint_commit(_SAVEPOINT)
        raise


def proof_create(
    *, run: Any, snapshot_hash: str, records: list[dict[str, Any]] | None = None
) -> ExecutionProof:
    """Prove a finished run and append the proof to the organization's log (proof_prepare,
    then proof_append)."""
    return proof_append(proof_prepare(run=run, snapshot_hash=snapshot_hash, records=records))


def proof_get(*, run_id: Any) -> ExecutionProof | None:
    return ExecutionProof.objects.filter(run_id=run_id).first()


def proof_output(proof: ExecutionProof) -> dict[str, Any]:
    import json

    return {
        "payload": json.loads(proof.canonical),
        "digest": proof.digest,
        "signature": proof.signature,
        "key_name": proof.key_name,
        "key_id": proof.key_id,
        "log_index": proof.log_index,
    }
