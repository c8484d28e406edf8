"""The organization's transparency log: an append-only Merkle tree of proof digests in its schema.

Appends serialize on the log's head row (SELECT ... FOR UPDATE) and write the leaves and the
nodes they complete in the same transaction, in one statement; the head keeps the tree's right
edge, so an append reads nothing else. Proofs read O(log n) nodes in one query (engine/trust/merkle.py).
"""

from __future__ import annotations

import base64
import functools
import json
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from cadence_site.prepared import bound_cursor
from engine.trust import merkle, signing
from engine.trust.models import ExecutionProof, LogHead, LogLeaf, LogNode, TreeHead
from engine.trust.verify_bundle import Checkpoint, VerifyError, leaf_hash, open_checkpoint

# A proof still outside the log after this long was left by a crash that nothing has swept up
# yet (every sequencing, tree head and read of its entry takes it in): the audit says so.
SEQUENCE_GRACE = timedelta(minutes=10)


@functools.lru_cache(maxsize=4096)
def organization_slug(schema_name: str) -> str:
    from tenants.models import Organization

    # The slug is immutable, so a cache for the process's life is safe.
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT slug FROM public."{Organization._meta.db_table}" WHERE schema_name = %s',
            [schema_name],
        )
        row = cursor.fetchone()
    return row[0] if row else schema_name


def log_origin(schema_name: str | None = None) -> str:
    """The checkpoint origin line: names this deployment's log of this organization."""
    slug = organization_slug(schema_name or connection.schema_name)
    return f"{signing.key_name()}/orgs/{slug}/log"


def _head(lock: bool) -> LogHead:
    query = LogHead.objects.select_for_update() if lock else LogHead.objects
    head = query.filter(pk=1).first()
    if head is None:
        LogHead.objects.bulk_create(
            [LogHead(pk=1, size=0, root=merkle.EMPTY_ROOT.hex(), frontier=[])],
            ignore_conflicts=True,
        )
        head = query.get(pk=1)
    return head


def _locked_head(cursor, *, run_id: Any = None) -> tuple[int, list, bool]:
    """The head's size and right edge, locked; and whether `run_id` already has a proof."""
    exists = (
        f"EXISTS (SELECT 1 FROM {ExecutionProof._meta.db_table} WHERE run_id = %s)"
        if run_id is not None
        else "false"
    )
    cursor.execute(
        f"SELECT size, frontier, {exists} FROM {LogHead._meta.db_table} WHERE id = 1 FOR UPDATE",
        [run_id] if run_id is not None else [],
    )
    row = cursor.fetchone()
    if row is None:  # the organization's first append: make the head, then lock it
        _head(lock=True)
        return _locked_head(cursor, run_id=run_id)
    size, frontier, proven = row
    return size, json.loads(frontier) if isinstance(frontier, str) else frontier, proven


def log_append(
    *,
    entries: Sequence[tuple[str, uuid.UUID | str]],
    proof: dict[str, Any] | None = None,
) -> list[int] | None:
    """Append (proof digest, run id) entries in order; returns their leaf indices.

    `proof`: an ExecutionProof row's columns (but `log_index`) for the one entry, written in the
    same statement; None is returned, and nothing written, when its run already has a proof.

    Two statements, whatever the count: the head locked (SELECT ... FOR UPDATE), then the leaves,
    the nodes they complete, the new head (and the proof) in one INSERT with writable CTEs. No
    savepoint when nested (see proofs.proof_create): a failure rolls back the caller's block."""
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        size, edge, proven = _locked_head(cursor, run_id=proof["run_id"] if proof else None)
        if proven:
            return None
        sql, params, indices = _append_statement(size, edge, entries)
        if proof is None:
            cursor.execute(sql + " SELECT 1", params)
        else:
            columns = [*proof, "log_index"]
            # The payload column holds the payload; its canonical text (signed, in the row
            # beside it) is that JSON already: jsonb takes it rather than a second encoding.
            text = proof.get("canonical")
            dumps = (lambda _payload: text) if isinstance(text, str) else None
            values = [Jsonb(v, dumps) if k == "payload" else v for k, v in proof.items()]
            cursor.execute(
                sql
                + f" INSERT INTO {ExecutionProof._meta.db_table}"
                + " ({})".format(", ".join(f'"{c}"' for c in columns))
                + f" VALUES ({', '.join(['%s'] * len(columns))})",
                [*params, *values, indices[0]],
            )
        return indices


def log_sequence(*, limit: int = 5000, attempts: int = 50) -> int:
    """Take the proofs written since the last call into the log, oldest first (at most `limit`):
    their leaves, the nodes they complete, the new head and each proof's log index. Returns how
    many it took.

    Two statements and no lock held between them: the head and the waiting proofs read in one
    snapshot, then one statement of writable CTEs whose head UPDATE applies only if the head is
    still the one read (`size`); the leaves, nodes and log indices are written only with it. A
    concurrent sequencing that committed first (or holds the head, uncommitted: the UPDATE waits
    for it, then finds the size changed) makes it write nothing, and it reads again.

    A run's proof is written with the run and sequenced just after its commit
    (engine/trust/turns.py), together with any other run's that is waiting: nothing holds the
    log's head across a run's transaction. What a crash left waiting is taken in by the next
    sequencing in the organization, by the signing of a tree head (tree_head_sign, periodic)
    and by any read of that proof's log entry (proof_in_log)."""
    table = ExecutionProof._meta.db_table
    for _ in range(attempts):
        # Both statements prepared: their texts are fixed (the values are arrays).
        with bound_cursor() as cursor:
            cursor.execute(
                f"SELECT h.size, h.frontier, ARRAY(SELECT ARRAY[p.id::text, p.digest,"
                f" p.run_id::text] FROM {table} p WHERE p.log_index IS NULL"
                " ORDER BY p.created_at, p.id LIMIT %s)"
                f" FROM {LogHead._meta.db_table} h WHERE h.id = 1",
                [limit],
            )
            row = cursor.fetchone()
            if row is None:  # the organization's first entry: make its head
                _head(lock=False)
                continue
            size, edge, waiting = row
            if not waiting:
                return 0
            edge = json.loads(edge) if isinstance(edge, str) else edge
            sql, params, indices = _append_statement(
                size, edge, [(digest, run_id) for _, digest, run_id in waiting], guarded=True
            )
            cursor.execute(
                sql + f", proofs AS (UPDATE {table} AS p SET log_index = s.i"
                " FROM unnest(%s::uuid[], %s::bigint[]) AS s(id, i)"
                " WHERE p.id = s.id AND EXISTS (SELECT 1 FROM head))"
                " SELECT count(*) FROM head",
                [*params, [row[0] for row in waiting], indices],
            )
            if cursor.fetchone()[0]:
                return len(waiting)
    raise RuntimeError(f"the log's head kept moving: {attempts} sequencing attempts lost")


def proof_in_log(proof: ExecutionProof) -> ExecutionProof:
    """`proof` with its log index, sequencing what waits when it has none yet; LookupError when
    it still has none (a sequencing elsewhere holds it, uncommitted)."""
    if proof.log_index is None:
        log_sequence()
        proof.refresh_from_db(fields=["log_index"])
        if proof.log_index is None:
            raise LookupError(f"the proof of run {proof.run_id} is not in the log yet")
    return proof


def _append_statement(
    size: int,
    edge: list,
    entries: Sequence[tuple[str, uuid.UUID | str]],
    *,
    guarded: bool = False,
) -> tuple[str, list[Any], list[int]]:
    """The writable CTEs that append `entries` to a tree of `size` leaves with right edge
    `edge`: the new head (CTE `head`), the leaves, the nodes they complete. `guarded`: the head
    is updated only if its size is still `size` (RETURNING a row then), and the leaves and nodes
    only with it. The caller adds the statement's last part (its parameters after these)."""
    now = timezone.now()
    frontier = merkle.Frontier.from_json(size, edge)
    leaves: list[tuple[int, str, str]] = []
    levels, positions, hashes = [], [], []
    for proof_digest, run_id in entries:
        index = frontier.size
        for level, position, value in frontier.append(leaf_hash(bytes.fromhex(proof_digest))):
            levels.append(level)
            positions.append(position)
            hashes.append(value)
        leaves.append((index, proof_digest, str(run_id)))
    only = " WHERE EXISTS (SELECT 1 FROM head)" if guarded else ""
    sql = (
        f"WITH head AS (UPDATE {LogHead._meta.db_table} SET size = %s, root = %s, frontier = %s,"
        " updated_at = %s WHERE id = 1"
        + (" AND size = %s RETURNING 1)," if guarded else "),")
        + f' leaves AS (INSERT INTO {LogLeaf._meta.db_table} ("index", digest, run_id, created_at)'
        " SELECT i, d, r, %s FROM unnest(%s::bigint[], %s::varchar[], %s::uuid[]) AS e(i, d, r)"
        + only
        + "),"
        f' nodes AS (INSERT INTO {LogNode._meta.db_table} ("level", "index", hash)'
        " SELECT * FROM unnest(%s::smallint[], %s::bigint[], %s::bytea[])" + only + ")"
    )
    params: list[Any] = [
        frontier.size,
        frontier.root().hex(),
        Jsonb(frontier.to_json()),
        now,
        *([size] if guarded else []),
        now,
        [i for i, _, _ in leaves],
        [d for _, d, _ in leaves],
        [r for _, _, r in leaves],
        levels,
        positions,
        hashes,
    ]
    return sql, params, [i for i, _, _ in leaves]


def fetch_nodes(keys: Sequence[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
    if not keys:
        return {}
    # One indexed lookup per key (a join on unnest), not a planner's guess over an OR list.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT n.level, n.index, n.hash FROM {LogNode._meta.db_table} n "
            "JOIN unnest(%s::smallint[], %s::bigint[]) AS k(l, i) ON n.level = k.l AND n.index = k.i",
            [[k[0] for k in keys], [k[1] for k in keys]],
        )
        found = {(level, index): bytes(value) for level, index, value in cursor.fetchall()}
    missing = set(keys) - found.keys()
    if missing:
        raise LookupError(f"the log is missing {len(missing)} node(s), e.g. {min(missing)}")
    return found


def log_size() -> int:
    head = LogHead.objects.filter(pk=1).first()
    return head.size if head else 0


def log_root(size: int) -> bytes:
    return merkle.root(size, fetch_nodes)


def log_inclusion(*, index: int, size: int) -> list[bytes]:
    return merkle.inclusion_proof(index, size, fetch_nodes)


def log_consistency(*, size1: int, size2: int) -> list[bytes]:
    return merkle.consistency_proof(size1, size2, fetch_nodes)


def tree_head_sign(*, force: bool = False) -> TreeHead:
    """A signed checkpoint of the current tree (the proofs waiting taken in first), unless the
    latest one already covers it."""
    with transaction.atomic():
        log_sequence()  # what waits to be taken in is in the head it signs
        head = _head(lock=True)
        latest = TreeHead.objects.order_by("-size", "-created_at").first()
        if latest is not None and latest.size == head.size and not force:
            return latest
        signer = signing.keyring().current
        body = Checkpoint(log_origin(), head.size, bytes.fromhex(head.root)).body()
        return TreeHead.objects.create(
            size=head.size, root=head.root, note=signer.sign_note(body), key_id=signer.key_id.hex()
        )


def tree_head_covering(*, index: int) -> TreeHead:
    """The latest signed tree head that contains leaf `index` (signing one if none does yet)."""
    latest = TreeHead.objects.order_by("-size", "-created_at").first()
    if latest is None or latest.size <= index:
        latest = tree_head_sign()
    return latest


def checkpoint_output(tree_head: TreeHead) -> dict[str, Any]:
    return {
        "origin": log_origin(),
        "size": tree_head.size,
        "root_hash": base64.b64encode(bytes.fromhex(tree_head.root)).decode(),
        "checkpoint": tree_head.note,
        "created_at": tree_head.created_at.isoformat(),
    }


def log_audit() -> list[str]:
    """Recompute the whole log from its leaves: every signed tree head must be a prefix of it and
    every entry's proof must still exist with the same digest. Returns the problems found."""
    from engine.models import Run
    from engine.trust.models import ExecutionProof

    problems: list[str] = []
    tree = merkle.MemoryTree()
    proofs = dict(ExecutionProof.objects.values_list("log_index", "digest"))
    from engine.retention.models import PurgedRun

    runs = {str(pk) for pk in Run.objects.values_list("id", flat=True)}
    # A run purged by retention left its record: purged, not removed (engine/retention).
    runs |= {str(pk) for pk in PurgedRun.objects.values_list("run_id", flat=True)}
    expected = 0
    for index, proof_digest, run_id in LogLeaf.objects.order_by("index").values_list(
        "index", "digest", "run_id"
    ):
        if index != expected:
            problems.append(f"log entries {expected}..{index - 1} are missing")
        expected = index + 1
        tree.append(leaf_hash(bytes.fromhex(proof_digest)))
        if proofs.get(index) != proof_digest:
            problems.append(f"log entry {index} (run {run_id}): its proof is missing or changed")
        if str(run_id) not in runs:
            problems.append(f"log entry {index}: run {run_id} was removed")
    keys = signing.keyring().verifiers
    for tree_head in TreeHead.objects.order_by("size"):
        try:
            checkpoint = open_checkpoint(tree_head.note, keys)
        except VerifyError as exc:
            problems.append(f"tree head {tree_head.id} (size {tree_head.size}): {exc}")
            continue
        if checkpoint.size > tree.size or tree.root(checkpoint.size) != checkpoint.root:
            problems.append(f"tree head of size {checkpoint.size} does not match the log's entries")
    stale = timezone.now() - SEQUENCE_GRACE
    waiting = ExecutionProof.objects.filter(log_index__isnull=True, created_at__lt=stale)
    if waiting.exists():
        problems.append(
            f"{waiting.count()} proof(s) were never taken into the log"
            f" (the oldest from {waiting.order_by('created_at').first().created_at.isoformat()})"
        )
    head = LogHead.objects.filter(pk=1).first()
    if head is not None and (head.size != tree.size or head.root != tree.root().hex()):
        problems.append("the log head does not match the log's entries")
    return problems
