from __future__ import annotations

from django.db import models

from plugins.models import PluginVersionFields


class SystemPluginVersion(PluginVersionFields):
    """A system plugin version, installed by operators for every organization (public schema)."""

    class Meta(PluginVersionFields.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["plugin_id", "version"], name="system_plugin_version_unique"
            )
        ]
        verbose_name = "system plugin version"
