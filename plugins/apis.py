"""REST for the plugin catalogs an organization sees: list, upload, detail, status changes."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from cadence_site.api import OrgMemberApi
from cadence_site.errors import ApplicationError, ForbiddenError, NotFoundError
from cadence_site.openapi import results_of
from plugins import selectors, services
from plugins.archive import MAX_PACKAGE_BYTES
from plugins.manifest import MANIFEST_SCHEMA
from tenants.roles import Role


def version_output(source: str, row: Any, *, manifest: bool = False) -> dict[str, Any]:
    body = {
        "version": row.version,
        "source": source,
        "status": row.status,
        "sha256": row.sha256,
        "size": row.size,
        "capabilities": row.capabilities,
        "capability_diff": row.capability_diff,
        "uploaded_by": row.uploaded_by,
        "approved_by": row.approved_by,
        "created_at": row.created_at.isoformat(),
    }
    if manifest:
        body["manifest"] = row.manifest
    return body


def plugins_output(rows: list[tuple[str, Any]], *, manifest: bool = False) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, str], dict[str, Any]] = {}
    for source, row in rows:
        entry = grouped.setdefault(
            (row.plugin_id, source),
            {
                "id": row.plugin_id,
                "source": source,
                "name": row.name,
                "description": row.description,
                "kind": row.manifest.get("kind"),
                "versions": [],
            },
        )
        entry["versions"].append(version_output(source, row, manifest=manifest))
    return list(grouped.values())


class PluginVersionOutput(serializers.Serializer):
    version = serializers.CharField()
    source = serializers.ChoiceField(choices=["system", "tenant"])
    status = serializers.CharField()
    sha256 = serializers.CharField()
    size = serializers.IntegerField()
    capabilities = serializers.JSONField()
    capability_diff = serializers.JSONField()
    uploaded_by = serializers.CharField(allow_blank=True, allow_null=True)
    approved_by = serializers.CharField(allow_blank=True, allow_null=True)
    created_at = serializers.DateTimeField()
    manifest = serializers.JSONField(required=False, help_text="On detail and upload answers.")


class PluginOutput(serializers.Serializer):
    id = serializers.CharField()
    source = serializers.ChoiceField(choices=["system", "tenant"])
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    kind = serializers.CharField(allow_null=True)
    versions = PluginVersionOutput(many=True)


class UploadInput(serializers.Serializer):
    package = serializers.FileField()


class PluginListApi(OrgMemberApi):
    read_role = Role.VIEWER
    required_role = Role.ADMIN
    rate_scope = "uploads"  # per caller, on top of the organization's request bucket
    parser_classes = [MultiPartParser]

    @extend_schema(
        summary="Plugins this organization sees (system and its own)",
        responses={200: results_of(PluginOutput)},
    )
    def get(self, request, org_slug):
        return Response({"results": plugins_output(selectors.plugin_version_list())})

    @extend_schema(
        summary="Upload a plugin package (ZIP)",
        description="201 for a new version, 200 when the same package was already uploaded.",
        request={"multipart/form-data": UploadInput},
        responses={201: PluginOutput, 200: PluginOutput, 409: None},
    )
    def post(self, request, org_slug):
        upload = request.FILES.get("package")
        if upload is None:
            raise ApplicationError(
                "Send the package as the multipart field 'package'.", "package_required"
            )
        if upload.size > MAX_PACKAGE_BYTES:  # before any byte is parsed as a ZIP
            raise ApplicationError(
                f"The package exceeds {MAX_PACKAGE_BYTES} bytes.", "too_large", status=413
            )
        row, created = services.plugin_upload(
            raw=upload.read(), uploaded_by=str(self.actor(request)), actor=self.actor(request)
        )
        return Response(
            plugins_output([("tenant", row)], manifest=True)[0], status=201 if created else 200
        )


class PluginDetailApi(OrgMemberApi):
    read_role = Role.VIEWER

    @extend_schema(
        summary="One plugin's versions, with their manifests",
        responses={200: results_of(PluginOutput)},
    )
    def get(self, request, org_slug, plugin_id):
        rows = selectors.plugin_versions_get(plugin_id=plugin_id)
        if not rows:
            raise NotFoundError("No such plugin.")
        return Response({"results": plugins_output(rows, manifest=True)})


class PluginVersionActionApi(OrgMemberApi):
    required_role = Role.ADMIN
    action = ""

    @extend_schema(
        summary="Change a plugin version's status",
        request=None,
        responses={200: PluginVersionOutput, 409: None},
    )
    def post(self, request, org_slug, plugin_id, version):
        source, row = selectors.plugin_version_get(plugin_id=plugin_id, version=version)
        if row is None:
            raise NotFoundError("No such plugin version.")
        if source == "system":
            raise ForbiddenError("System plugins are managed by operators.", "system_plugin")
        row = services.plugin_version_transition(
            row=row, action=self.action, actor=self.actor(request)
        )
        return Response(version_output(source, row))


class ManifestSchemaApi(APIView):
    """The published manifest schema (`cadence-plugin.json`, version 1): public, no credentials."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="The plugin manifest's JSON Schema (version 1)",
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        return Response(MANIFEST_SCHEMA)
