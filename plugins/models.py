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


class McpServer(models.Model):
    """A remote MCP server an organization registered; its allowed tools become orchestrator tools.

    `tools` is the approved snapshot (allowed tools only) and `tools_hash` the hash of the server's
    whole tool list when it was approved; a different list seen later waits in `pending_*` and
    blocks the server's use until an admin approves it.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        NEEDS_APPROVAL = "needs_approval", "Tool list changed: waiting for approval"

    class Mode(models.TextChoices):
        AUTO = "auto", "Negotiate (2026-07-28 stateless, else the 2025 handshake)"
        LEGACY = "legacy", "2025 revisions (initialize handshake)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=48, unique=True)
    url = models.URLField(max_length=500)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.AUTO)
    allowed_tools = models.JSONField(default=list)
    credential_encrypted = models.TextField(blank=True, editable=False)
    credential_hint = models.CharField(max_length=20, blank=True, editable=False)
    protocol_version = models.CharField(max_length=20, blank=True)
    tools = models.JSONField(default=list)
    tools_hash = models.CharField(max_length=64)
    pending_tools = models.JSONField(default=list, blank=True)
    pending_hash = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "MCP server"

    def __str__(self) -> str:
        return self.name
