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
    # A tool message: the id of the call it answers (a `/v1/responses` function_call_output).
    tool_call_id = models.CharField(max_length=128, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    usage = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    run = models.ForeignKey(
        "engine.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    # While `streaming`: the process writing the reply (engine/runs/owners.py), its last heartbeat
    # (the text so far is stored with it), and when a cancel was asked (a reply whose owner is
    # gone ends `cancelled` then, `failed` otherwise: chat/orphans.py).
    owner = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["conversation", "seq"]
        indexes = [
            # The orphan sweep reads only replies in flight, in every schema, every few seconds.
            models.Index(
                fields=["heartbeat_at"],
                condition=models.Q(status="streaming"),
                name="message_inflight",
            )
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "seq"], name="message_conversation_seq_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id}#{self.seq} {self.role}"


class StoredResponse(models.Model):
    """A `/v1/responses` response kept for `previous_response_id` and retrieval (`store`, the
    default). Its turn lives in `conversation` as messages `first_seq`..`last_seq` (the input
    items, then the assistant's reply; the client's function calls in `tool_calls` are marked
    `"client": true`). The context a follow-up sees is the chain of `previous` responses'
    messages, so a response continued twice (a fork) keeps each branch's history exact. The id
    is the turn's run id."""

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"
        INCOMPLETE = "incomplete", "Incomplete"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="responses"
    )
    previous = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="followups"
    )
    owner_api_key_id = models.UUIDField(db_index=True)
    first_seq = models.PositiveIntegerField()
    last_seq = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.IN_PROGRESS)
    body = models.JSONField(default=dict, blank=True)  # the response object as last sent
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(first_seq__lte=models.F("last_seq")),
                name="stored_response_seq_range",
            )
        ]

    def __str__(self) -> str:
        return f"resp_{self.id.hex}"
