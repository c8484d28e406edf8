"""Checkpoints of running cadences and the fences of exclusive sections (tenant schema)."""

from __future__ import annotations

from django.db import models


class RunCheckpoint(models.Model):
    """The engine's checkpoint (engine.checkpoint.Checkpoint) of one run, after its last measure."""

    run_id = models.CharField(max_length=200, primary_key=True)
    cadence_name = models.CharField(max_length=200)
    measure_index = models.IntegerField()
    measure_name = models.CharField(max_length=200, null=True, blank=True)
    score_state = models.JSONField(default=dict)
    completed = models.BooleanField(default=False)
    saved_at = models.FloatField()  # the engine's own timestamp (time.time())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(measure_index__gte=-1), name="runcheckpoint_index_valid"
            )
        ]

    def __str__(self) -> str:
        return f"{self.run_id} after {self.measure_name or 'start'}"


class LockFence(models.Model):
    """The highest fencing token that has written under a lock key: a write with a lower token
    (a holder whose lease expired while another took over) is refused (engine/durable/locking.py)."""

    key = models.CharField(max_length=255, primary_key=True)
    token = models.BigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
