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
    # The run's step records written up to this checkpoint (seq 1..steps): what a replay "from
    # the failed step" copies into its new run.
    steps = models.IntegerField(default=0)
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


class QueuedRun(models.Model):
    """A run handed to Cadence to finish on a worker: its queue state beside the Run row.

    `state` moves queued -> running -> succeeded | dead; a worker claims it with a conditional
    update (only one wins), holds it under a lease it renews, and a run whose lease expired
    (its worker died) is claimed again by the next worker.
    """

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        DEAD = "dead", "Dead letter"
        DISCARDED = "discarded", "Discarded"

    run = models.OneToOneField("engine.Run", primary_key=True, on_delete=models.CASCADE)
    idempotency_key = models.CharField(max_length=128, unique=True)
    orchestrator_id = models.UUIDField()
    message = models.TextField()
    queue = models.CharField(max_length=100)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    deadline = models.DateTimeField(null=True, blank=True)
    callback_url = models.URLField(max_length=500, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    # Retries (services.queued_run_settle): the n-th retry waits about backoff * 2**(n-1) seconds
    # (at most backoff_max), half of it random; none is started past the deadline.
    backoff_seconds = models.FloatField(default=2.0)
    backoff_max_seconds = models.FloatField(default=300.0)
    not_before = models.DateTimeField(null=True, blank=True)  # a retry's earliest start
    claimed_by = models.CharField(max_length=200, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True)
    replay_of = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["state", "lease_until"], name="queuedrun_state_lease")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(attempts__lte=models.F("max_attempts")),
                name="queuedrun_attempts_bounded",
            )
        ]

    def __str__(self) -> str:
        return f"{self.run_id} {self.state}"
