"""Writes to the plugin catalogs: uploads, status changes, approvals.

An upload is checked completely (plugins.archive) before anything is stored; the package is then
written under its final key and the row created, and if the row cannot be created the package is
deleted again, so a failed upload leaves neither a row nor a file. No upload runs pip, imports
the package's code or opens a network connection.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, connection, transaction
from django_tenants.utils import get_public_schema_name

from cadence_site.errors import ApplicationError
from plugins import storage
from plugins.archive import PackageError, inspect_package
from plugins.manifest import capabilities, capability_diff, parse_version
from plugins.models import PluginStatus, PluginVersion
from plugins.system.models import SystemPluginVersion
from tenants.audit.changes import audit_change

logger = logging.getLogger(__name__)


def _model(system: bool):
    return SystemPluginVersion if system else PluginVersion


def catalog_is_system() -> bool:
    return connection.schema_name == get_public_schema_name()


def _refusal(error: PackageError) -> ApplicationError:
    return ApplicationError(
        error.message, error.code, {"issues": [issue.as_dict() for issue in error.issues]}
    )


def _previous(model, plugin_id: str):
    rows = list(model.objects.filter(plugin_id=plugin_id))
    return max(rows, key=lambda row: parse_version(row.version), default=None)


def plugin_upload(
    *, raw: bytes, uploaded_by: str = "", actor=None
) -> tuple[PluginVersion | SystemPluginVersion, bool]:
    """Store a package in the current schema's catalog (public = the system catalog).

    Returns (row, created). Re-uploading the same id and version is a no-op when the bytes are
    identical and a 409 otherwise: a published version never changes under its users.
    """
    system = catalog_is_system()
    try:
        package = inspect_package(raw, expected_kind=None if system else "tenant")
    except PackageError as exc:
        raise _refusal(exc) from None
    model = _model(system)
    plugin_id, version = package.plugin_id, package.version
    if not system and SystemPluginVersion.objects.filter(plugin_id=plugin_id).exists():
        raise ApplicationError(
            f"The id {plugin_id!r} belongs to a system plugin.",
            "plugin_id_reserved",
            {"id": plugin_id},
            status=409,
        )
    existing = model.objects.filter(plugin_id=plugin_id, version=version).first()
    if existing is not None:
        return _same_or_conflict(existing, package.sha256), False
    previous = _previous(model, plugin_id)
    caps = capabilities(package.manifest)
    diff = capability_diff(previous.capabilities if previous else None, caps)
    needs_approval = previous is not None and diff["widened"]
    key = storage.storage_key(
        plugin_id=plugin_id, version=version, schema_name=None if system else connection.schema_name
    )
    storage.package_store(key=key, raw=raw)
    try:
        with transaction.atomic():
            if not system:
                _quotas_enforce(plugin_id=plugin_id, size=package.size)
            row = model.objects.create(
                plugin_id=plugin_id,
                version=version,
                name=package.manifest["name"],
                description=package.manifest.get("description", ""),
                manifest=package.manifest,
                capabilities=caps,
                capability_diff=diff if previous else {},
                sha256=package.sha256,
                size=package.size,
                storage_key=key,
                status=PluginStatus.PENDING_APPROVAL if needs_approval else PluginStatus.ENABLED,
                uploaded_by=uploaded_by[:150],
                approved_by="" if needs_approval else uploaded_by[:150],
            )
            if not system:
                audit_change(
                    action="plugin.uploaded",
                    target=f"{plugin_id}@{version}",
                    actor=actor,
                    after={
                        "status": row.status,
                        "sha256": row.sha256,
                        "size": row.size,
                        "capabilities": caps,
                    },
                )
    except IntegrityError:
        # A concurrent upload of the same id and version won the unique constraint.
        storage.package_delete(key=key)
        existing = model.objects.get(plugin_id=plugin_id, version=version)
        return _same_or_conflict(existing, package.sha256), False
    except BaseException:
        storage.package_delete(key=key)
        raise
    storage.cache_fill(sha256=package.sha256, raw=raw)
    logger.info(
        "plugin uploaded", extra={"plugin": plugin_id, "version": version, "system": system}
    )
    if not needs_approval:
        _rebuild_users(plugin_id)
    return row, True


def _quotas_enforce(*, plugin_id: str, size: int) -> None:
    """The plan's max_plugins and max_storage_bytes, under the organization's lock."""
    from django.db.models import Sum

    from tenants.limits.quotas import current_org_id, quota_enforce

    org_id = current_org_id()
    if org_id is None:
        return
    if not PluginVersion.objects.filter(plugin_id=plugin_id).exists():
        quota_enforce(
            org_id=org_id,
            quota="max_plugins",
            count=lambda: PluginVersion.objects.values("plugin_id").distinct().count(),
        )
    quota_enforce(
        org_id=org_id,
        quota="max_storage_bytes",
        count=lambda: PluginVersion.objects.aggregate(total=Sum("size"))["total"] or 0,
        adding=size,
    )


def _same_or_conflict(existing, sha256: str):
    if existing.sha256 == sha256:
        return existing
    raise ApplicationError(
        f"{existing.plugin_id} {existing.version} already exists with different content; publish a new version.",
        "version_exists",
        {"id": existing.plugin_id, "version": existing.version},
        status=409,
    )


ALLOWED_TRANSITIONS = {
    "enable": (PluginStatus.ENABLED, {PluginStatus.DISABLED, PluginStatus.DEPRECATED}),
    "disable": (PluginStatus.DISABLED, {PluginStatus.ENABLED, PluginStatus.DEPRECATED}),
    "deprecate": (PluginStatus.DEPRECATED, {PluginStatus.ENABLED, PluginStatus.DISABLED}),
    "approve": (PluginStatus.ENABLED, {PluginStatus.PENDING_APPROVAL}),
}


def plugin_version_transition(*, row, action: str, actor=None) -> Any:
    """enable / disable / deprecate / approve one version, claimed with a conditional update."""
    target, sources = ALLOWED_TRANSITIONS[action]
    fields: dict[str, Any] = {"status": target}
    if action == "approve":
        fields["approved_by"] = str(actor or "")[:150]
    with transaction.atomic():
        before = row.status
        updated = type(row).objects.filter(pk=row.pk, status__in=sources).update(**fields)
        row.refresh_from_db()
        if updated and not catalog_is_system():
            audit_change(
                action=f"plugin.{action}",
                target=f"{row.plugin_id}@{row.version}",
                actor=actor,
                before={"status": before},
                after={"status": row.status},
            )
        if not updated:
            if row.status == target:
                return row
            raise ApplicationError(
                f"Cannot {action} a version that is {row.status}.",
                "invalid_transition",
                {"status": row.status},
                status=409,
            )
        _rebuild_users(row.plugin_id)
    return row


def _rebuild_users(plugin_id: str) -> None:
    """Rebuild the orchestrators whose plugin set names or pulled in `plugin_id`: in this schema
    for a tenant plugin; for a system plugin, one task per organization once this commits."""
    from plugins.binding import orchestrators_using_rebuild

    if not catalog_is_system():
        orchestrators_using_rebuild(plugin_id=plugin_id)
        return
    from plugins.tasks import plugin_users_rebuild
    from tenants.models import Organization

    schemas = list(
        Organization.objects.exclude(schema_name=get_public_schema_name()).values_list(
            "schema_name", flat=True
        )
    )

    def enqueue() -> None:
        for schema_name in schemas:
            plugin_users_rebuild.delay(schema_name, plugin_id)

    transaction.on_commit(enqueue)
