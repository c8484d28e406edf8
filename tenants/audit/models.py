from __future__ import annotations

import uuid

from django.db import models


class AuditEvent(models.Model):
    """What changed in an organization and who did it; lives in the organization's own schema."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    action = models.CharField(max_length=64)
    # Principals live in the public schema; kept as plain values so a deleted user leaves a trace.
    actor = models.CharField(max_length=200, blank=True)
    target = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.action} {self.target}"
