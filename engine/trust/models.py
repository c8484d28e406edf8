"""Snapshots, proofs and the transparency log (tenant schema: one log per organization).

Rows that evidence depends on are append-only: a trigger (migration 0001) refuses every UPDATE and
DELETE of a definition snapshot, an execution proof, a log leaf or a log node, so there is no
update path, not even a mistaken one through the ORM or the admin. Dropping an organization's
schema removes them with it.
"""

from __future__ import annotations

import json
import uuid

from django.db import models

HEX64 = r"^[0-9a-f]{64}$"


class DefinitionSnapshot(models.Model):
    """Everything that decides an orchestrator's behaviour, as RFC 8785 canonical JSON, stored
    once per SHA-256. `canonical` is the system of record (jsonb would reorder keys and rewrite
    numbers); `definition` is the same value, parsed, for queries and the admin."""

    hash = models.CharField(max_length=64, primary_key=True)
    canonical = models.TextField()
    definition = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(hash__regex=HEX64), name="snapshot_hash_hex")
        ]

    def __str__(self) -> str:
        return self.hash[:12]

    @property
    def value(self) -> dict:
        return json.loads(self.canonical)


class ExecutionProof(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run_id = models.UUIDField(unique=True)
    canonical = models.TextField()  # the payload's RFC 8785 bytes, which `digest` hashes
    payload = models.JSONField()
    digest = models.CharField(max_length=64, unique=True)
    signature = models.CharField(max_length=100)  # base64 Ed25519 over the 32-byte digest
    key_name = models.CharField(max_length=200)
    key_id = models.CharField(max_length=8)
    # The proof's leaf in the organization's log: set once, when the log takes it in
    # (engine/trust/log.log_sequence, just after its run's commit); NULL until then.
    log_index = models.BigIntegerField(unique=True, null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(digest__regex=HEX64), name="proof_digest_hex")
        ]
        indexes = [
            models.Index(
                fields=["created_at", "id"],
                condition=models.Q(log_index__isnull=True),
                name="proof_unsequenced",
            )
        ]

    def __str__(self) -> str:
        return f"proof {self.digest[:12]} of run {self.run_id}"


class LogHead(models.Model):
    """The log's current size, root and right edge; one row, locked by every append."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    size = models.BigIntegerField(default=0)
    root = models.CharField(max_length=64)
    frontier = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="loghead_single_row")]


class LogLeaf(models.Model):
    """Entry `index` of the log: a proof digest (the leaf data is its 32 bytes)."""

    index = models.BigIntegerField(primary_key=True)
    digest = models.CharField(max_length=64, unique=True)
    run_id = models.UUIDField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["index"]
        constraints = [
            models.CheckConstraint(condition=models.Q(index__gte=0), name="logleaf_index_valid")
        ]


class LogNode(models.Model):
    """The hash of a complete subtree: level 0 are leaf hashes (engine/trust/merkle.py)."""

    pk = models.CompositePrimaryKey("level", "index")
    level = models.PositiveSmallIntegerField()
    index = models.BigIntegerField()
    hash = models.BinaryField(max_length=32)

    class Meta:
        ordering = ["level", "index"]


class TreeHead(models.Model):
    """A signed tree head: the checkpoint (C2SP signed note) published for one tree size."""

    id = models.BigAutoField(primary_key=True)
    size = models.BigIntegerField()
    root = models.CharField(max_length=64)
    note = models.TextField()
    key_id = models.CharField(max_length=8)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    witnessed_at = models.DateTimeField(null=True, blank=True)
    witness_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        get_latest_by = "created_at"

    def __str__(self) -> str:
        return f"tree head {self.size} {self.root[:12]}"
