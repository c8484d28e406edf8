"""REST for an organization's MCP servers: register, list, refresh, approve, delete."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from cadence_site.api import OrgMemberApi, StrictSerializer
from cadence_site.errors import NotFoundError
from cadence_site.openapi import results_of
from plugins import mcp
from plugins.models import McpServer
from tenants.roles import Role


def mcp_server_output(server: McpServer) -> dict[str, Any]:
    return {
        "id": str(server.id),
        "name": server.name,
        "url": server.url,
        "mode": server.mode,
        "protocol_version": server.protocol_version,
        "allowed_tools": server.allowed_tools,
        # Write-only: a hint to recognise the credential, never the credential.
        "credential": server.credential_hint or None,
        "tools": server.tools,
        "tools_hash": server.tools_hash,
        "status": server.status,
        "pending_tools": server.pending_tools,
        "created_at": server.created_at.isoformat(),
        "updated_at": server.updated_at.isoformat(),
    }


class McpToolOutput(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    input_schema = serializers.DictField()


class McpServerOutput(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    url = serializers.URLField()
    mode = serializers.ChoiceField(choices=McpServer.Mode.choices)
    protocol_version = serializers.CharField(allow_blank=True)
    allowed_tools = serializers.ListField(child=serializers.CharField())
    credential = serializers.CharField(allow_null=True, help_text="A hint, never the credential.")
    tools = McpToolOutput(many=True, help_text="The approved, allowed tools.")
    tools_hash = serializers.CharField(help_text="Hash of the server's whole approved tool list.")
    status = serializers.ChoiceField(choices=McpServer.Status.choices)
    pending_tools = McpToolOutput(many=True, help_text="A changed list waiting for approval.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class McpServerInput(StrictSerializer):
    name = serializers.RegexField(r"^[a-z][a-z0-9_]{0,47}$", max_length=48)
    url = serializers.URLField(max_length=500)
    mode = serializers.ChoiceField(choices=McpServer.Mode.choices, required=False)
    allowed_tools = serializers.ListField(
        child=serializers.CharField(max_length=64), min_length=1, max_length=64
    )
    credential = serializers.CharField(
        max_length=4000, required=False, allow_blank=True, write_only=True
    )


class McpServerListApi(OrgMemberApi):
    read_role = Role.MEMBER
    required_role = Role.ADMIN

    @extend_schema(summary="List MCP servers", responses={200: results_of(McpServerOutput)})
    def get(self, request, org_slug):
        return Response({"results": [mcp_server_output(s) for s in McpServer.objects.all()]})

    @extend_schema(
        summary="Register an MCP server (its tool list is read and approved)",
        request=McpServerInput,
        responses={201: McpServerOutput},
    )
    def post(self, request, org_slug):
        data = self.validated(McpServerInput, request.data)
        return Response(mcp_server_output(mcp.mcp_server_register(**data)), status=201)


class McpServerMixin:
    def _get(self, server_id) -> McpServer:
        server = McpServer.objects.filter(pk=server_id).first()
        if server is None:
            raise NotFoundError("No such MCP server.")
        return server


class McpServerDetailApi(McpServerMixin, OrgMemberApi):
    read_role = Role.MEMBER
    required_role = Role.ADMIN

    @extend_schema(summary="One MCP server", responses={200: McpServerOutput})
    def get(self, request, org_slug, server_id):
        return Response(mcp_server_output(self._get(server_id)))

    @extend_schema(summary="Remove an MCP server no orchestrator uses", responses={204: None})
    def delete(self, request, org_slug, server_id):
        mcp.mcp_server_delete(server=self._get(server_id))
        return Response(status=204)


class McpServerActionApi(McpServerMixin, OrgMemberApi):
    required_role = Role.ADMIN
    action = ""

    @extend_schema(
        summary="Re-read the tool list, or approve a changed one",
        request=None,
        responses={200: McpServerOutput},
    )
    def post(self, request, org_slug, server_id):
        handler = {"refresh": mcp.mcp_server_refresh, "approve": mcp.mcp_server_approve}[
            self.action
        ]
        return Response(mcp_server_output(handler(server=self._get(server_id))))
