from __future__ import annotations

import uuid

from django.db import models


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    orchestrator = models.ForeignKey(
        "orchestrators.OrchestratorInstance", on_delete=models.CASCADE, related_name="conversations"
    )
    # The owner lives in the public schema (a user or an API key): kept as plain ids.
    owner_user_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    owner_api_key_id = models.UUIDField(null=True, blank=True, db_index=True)
    # Its orchestrator's team, kept in step when the orchestrator moves (tenants/teams/scoping.py).
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    title = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    last_seq = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(owner_user_id__isnull=False)
                | models.Q(owner_api_key_id__isnull=False),
                name="conversation_has_owner",
            ),
        ]

    def __str__(self) -> str:
        return self.title or str(self.id)


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"
        TOOL = "tool", "Tool"
        SYSTEM = "system", "System"

    class Status(models.TextChoices):
        COMPLETE = "complete", "Complete"
        STREAMING = "streaming", "Streaming"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    seq = models.PositiveIntegerField()
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    tool_calls = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    usage = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    run = models.ForeignKey(
        "engine.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["conversation", "seq"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "seq"], name="message_conversation_seq_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id}#{self.seq} {self.role}"
