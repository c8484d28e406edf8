"""The Django side of runs (tenant schema): every orchestrator turn is a Run with its step events.

Kept apart from the library modules: `import engine` never imports this (see engine/README.md).
"""

from __future__ import annotations

import uuid

from django.db import models


class Run(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Trigger(models.TextChoices):
        CHAT = "chat", "Chat (WebSocket)"
        REST = "rest", "REST"
        OPENAI = "openai", "OpenAI-compatible API"
        INVOKE = "invoke", "Invoke"
        ADMIN = "admin", "Admin try-it"
        QUEUE = "queue", "Queued run"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    orchestrator = models.ForeignKey(
        "orchestrators.OrchestratorInstance",
        null=True,
        on_delete=models.SET_NULL,
        related_name="runs",
    )
    orchestrator_slug = models.CharField(max_length=63)
    config_hash = models.CharField(max_length=64, blank=True)
    conversation_id = models.UUIDField(null=True, blank=True, db_index=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    principal = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    input = models.JSONField(default=dict, blank=True)
    output = models.TextField(blank=True)
    usage = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    # The definition the run executes (engine/trust): recovery, retries and replay use it.
    snapshot = models.ForeignKey(
        "trust.DefinitionSnapshot",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="runs",
    )

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    status__in=["queued", "running", "succeeded", "failed", "cancelled"]
                ),
                name="run_status_valid",
            )
        ]

    def __str__(self) -> str:
        return f"{self.orchestrator_slug} {self.status} {self.started_at:%Y-%m-%d %H:%M:%S}"


class RunEvent(models.Model):
    """One step of a run: a note (or graph node, or agent turn), a tool call, a tool result."""

    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=16)  # step | tool_call | tool_result | error
    name = models.CharField(max_length=200)
    outcome = models.CharField(max_length=16, blank=True)  # started | completed | failed
    duration_ms = models.FloatField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    at = models.DateTimeField()

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="runevent_run_seq_unique")
        ]
