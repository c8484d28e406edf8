"""Plugin catalogs. One row per plugin id and version, in two schemas.

`PluginVersionFields` is shared by the system catalog (`plugins.system`, public schema only,
operators) and each organization's own catalog (`PluginVersion` here, one table per tenant
schema). An organization sees both; the `source` of a listing says which one a row came from.
"""

from __future__ import annotations

import uuid

from django.db import models


class PluginStatus(models.TextChoices):
    ENABLED = "enabled", "Enabled"
    DISABLED = "disabled", "Disabled"
    DEPRECATED = "deprecated", "Deprecated (usable, not for new work)"
    # An upgrade that widens capabilities waits here until an admin approves it.
    PENDING_APPROVAL = "pending_approval", "Waiting for approval"


class PluginVersionFields(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    plugin_id = models.CharField(max_length=200)
    version = models.CharField(max_length=40)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    manifest = models.JSONField()
    capabilities = models.JSONField(default=dict)
    # What this version adds or removes against the highest earlier version (plugins.manifest).
    capability_diff = models.JSONField(default=dict)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveIntegerField()
    storage_key = models.CharField(max_length=500)
    status = models.CharField(
        max_length=20, choices=PluginStatus.choices, default=PluginStatus.ENABLED
    )
    uploaded_by = models.CharField(max_length=150, blank=True)
    approved_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        ordering = ["plugin_id", "-created_at"]

    def __str__(self) -> str:
        return f"{self.plugin_id} {self.version}"


class PluginVersion(PluginVersionFields):
    """An organization's uploaded plugin version (declarative only)."""

    class Meta(PluginVersionFields.Meta):
        constraints = [
            models.UniqueConstraint(fields=["plugin_id", "version"], name="plugin_version_unique")
        ]
        verbose_name = "plugin version"
