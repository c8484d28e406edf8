"""Reads of the plugin catalogs, always from the current organization's point of view.

Queries run in the tenant's schema: `PluginVersion` is that organization's table, and
`SystemPluginVersion` lives in public (reached through the search path), so another
organization's plugins are not even addressable from here.
"""

from __future__ import annotations

from typing import Any

from plugins.manifest import parse_version
from plugins.models import PluginStatus, PluginVersion
from plugins.resolution import Candidate
from plugins.system.models import SystemPluginVersion

USABLE = (PluginStatus.ENABLED, PluginStatus.DEPRECATED)
SOURCES = {"tenant": PluginVersion, "system": SystemPluginVersion}


def _sources(include_tenant: bool = True):
    yield "system", SystemPluginVersion
    if include_tenant:
        yield "tenant", PluginVersion


def plugin_version_list(*, include_tenant: bool = True) -> list[tuple[str, Any]]:
    """Every version of every plugin this organization can see, as (source, row), newest first."""
    rows = [
        (source, row) for source, model in _sources(include_tenant) for row in model.objects.all()
    ]
    rows.sort(key=lambda item: (item[1].plugin_id, parse_version(item[1].version)), reverse=True)
    rows.sort(key=lambda item: item[1].plugin_id)
    return rows


def plugin_versions_get(*, plugin_id: str, include_tenant: bool = True) -> list[tuple[str, Any]]:
    return [
        (source, row)
        for source, row in plugin_version_list(include_tenant=include_tenant)
        if row.plugin_id == plugin_id
    ]


def plugin_version_get(*, plugin_id: str, version: str, source: str | None = None):
    for name, model in _sources():
        if source not in (None, name):
            continue
        row = model.objects.filter(plugin_id=plugin_id, version=version).first()
        if row is not None:
            return name, row
    return None, None


def resolution_catalog() -> dict[str, list[Candidate]]:
    """Usable versions (enabled or deprecated) from both catalogs, as resolution candidates."""
    catalog: dict[str, list[Candidate]] = {}
    for source, model in _sources():
        fields = ("plugin_id", "version", "manifest__dependencies", "sha256")
        for plugin_id, version, deps, sha256 in model.objects.filter(status__in=USABLE).values_list(
            *fields
        ):
            catalog.setdefault(plugin_id, []).append(
                Candidate(plugin_id, version, tuple(sorted((deps or {}).items())), source, sha256)
            )
    return catalog


def catalog_row(candidate: Candidate):
    return SOURCES[candidate.source].objects.get(
        plugin_id=candidate.plugin_id, version=candidate.version
    )


def locked_row(plugin_id: str, pinned: dict[str, str]):
    model = SOURCES.get(pinned.get("source", ""))
    if model is None:
        return None
    return model.objects.filter(
        plugin_id=plugin_id, version=pinned["version"], sha256=pinned["sha256"], status__in=USABLE
    ).first()
