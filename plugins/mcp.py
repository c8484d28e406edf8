"""Remote MCP servers (Streamable HTTP) as orchestrator tools, through the `mcp` SDK.

Every connection goes through the outbound policy (`cadence_site.outbound.httpx2_client`): at
registration, at refresh and at every call, so a server that later resolves to a private
address, or answers with a redirect elsewhere, is refused then too. `mode="auto"` speaks the
stateless 2026-07-28 revision and falls back to the 2025 handshake; `"legacy"` forces the latter.

The tool list is the contract: its hash is approved at registration, part of each orchestrator's
configuration hash, and checked again on each call. A server whose list changed is blocked
(`needs_approval`) until an admin approves the new list, which rebuilds the orchestrators using it.
An orchestrator names a server's tools with `mcp:<server name>` in its `tools`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from asgiref.sync import async_to_sync
from django.db import connection, transaction

from cadence_site.errors import ApplicationError
from cadence_site.outbound import EgressDenied, acheck_url, check_url, httpx2_client
from orchestrators import crypto
from plugins.models import McpServer
from tenants.audit.changes import audit_change

logger = logging.getLogger(__name__)

PREFIX = "mcp:"
TIMEOUT = 15.0
MAX_TOOLS = 256
MAX_RESULT_CHARS = 16_000


def tools_digest(tools: list[dict[str, Any]]) -> str:
    canonical = sorted(tools, key=lambda t: t["name"])
    return hashlib.sha256(
        json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _headers(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"} if credential else {}


# A server's tool list is re-read on a call at most this often per process (seconds): a changed
# list is caught within this window, without a second round trip on every call.
LIST_CHECK_INTERVAL = 30.0
_checked: dict[tuple[str, str], tuple[float, str]] = {}


def _connect_mode(mode: str, protocol_version: str) -> str:
    """The version the server spoke at registration when it is a stateless one: no probe."""
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    if mode == "auto" and protocol_version in MODERN_PROTOCOL_VERSIONS:
        return protocol_version
    return mode


class _Session:
    """One connection to a server, as an async context manager yielding the SDK client."""

    def __init__(self, url: str, mode: str, credential: str):
        self.url, self.mode, self.credential = url, mode, credential

    async def __aenter__(self):
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        await acheck_url(self.url)
        self._http = httpx2_client(TIMEOUT, headers=_headers(self.credential))
        await self._http.__aenter__()
        try:
            self._client = Client(
                streamable_http_client(self.url, http_client=self._http, terminate_on_close=False),
                mode=self.mode,
                read_timeout_seconds=TIMEOUT,
            )
            return await self._client.__aenter__()
        except BaseException:
            await self._http.__aexit__(None, None, None)
            raise

    async def __aexit__(self, *exc):
        try:
            await self._client.__aexit__(*exc)
        finally:
            await self._http.__aexit__(None, None, None)


def _tool_dicts(listed) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "description": t.description or "", "input_schema": t.input_schema or {}}
        for t in listed.tools[:MAX_TOOLS]
    ]


async def _list(url: str, mode: str, credential: str) -> tuple[list[dict], str]:
    async with _Session(url, mode, credential) as client:
        listed = await client.list_tools()
        return _tool_dicts(listed), str(getattr(client, "protocol_version", "") or "")


def _fetch(url: str, mode: str, credential: str) -> tuple[list[dict], str]:
    """The server's tool list, or an ApplicationError saying why it could not be read."""
    try:
        return async_to_sync(_list)(url, mode, credential)
    except EgressDenied:
        raise
    except Exception as exc:
        reason = _reason(exc)
        raise ApplicationError(
            f"The MCP server could not be reached: {reason}", "mcp_unreachable", {"field": "url"}
        ) from None


def _reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, EgressDenied):
        return exc.message
    return f"{type(exc).__name__}: {exc}"[:500]


def _allowed(tools: list[dict], allowed: list[str]) -> list[dict]:
    names = {t["name"] for t in tools}
    missing = sorted(set(allowed) - names)
    if missing:
        raise ApplicationError(
            f"The server has no tools named {', '.join(missing)}.",
            "unknown_mcp_tool",
            {"field": "allowed_tools", "missing": missing},
        )
    return [t for t in tools if t["name"] in set(allowed)]


def mcp_server_register(
    *, name: str, url: str, allowed_tools: list[str], credential: str = "", mode: str = "auto"
) -> McpServer:
    check_url(url)  # before any connection: a private address never gets a request
    if McpServer.objects.filter(name=name).exists():
        raise ApplicationError(
            f"An MCP server named {name!r} exists.", "name_taken", {"field": "name"}
        )
    tools, protocol = _fetch(url, mode, credential)
    with transaction.atomic():
        server = McpServer.objects.create(
            name=name,
            url=url,
            mode=mode,
            allowed_tools=sorted(set(allowed_tools)),
            credential_encrypted=crypto.encrypt(credential),
            credential_hint=crypto.mask(credential),
            protocol_version=protocol,
            tools=_allowed(tools, allowed_tools),
            tools_hash=tools_digest(tools),
        )
        audit_change(action="mcp_server.registered", target=name, after=_audited(server))
    return server


def _audited(server: McpServer) -> dict:
    """What the audit trail keeps of a server: never its credential, only the hint."""
    return {
        "url": server.url,
        "mode": server.mode,
        "allowed_tools": list(server.allowed_tools),
        "credential_hint": server.credential_hint,
        "status": server.status,
        "tools_hash": server.tools_hash,
    }


def mcp_server_refresh(*, server: McpServer) -> McpServer:
    """Read the list again; a changed list blocks the server until approved."""
    tools, protocol = _fetch(server.url, server.mode, crypto.decrypt(server.credential_encrypted))
    digest = tools_digest(tools)
    with transaction.atomic():
        server = McpServer.objects.select_for_update().get(pk=server.pk)
        before = _audited(server)
        server.protocol_version = protocol
        if digest == server.tools_hash:
            server.pending_tools, server.pending_hash, server.status = (
                [],
                "",
                McpServer.Status.ACTIVE,
            )
        else:
            server.pending_tools, server.pending_hash = tools, digest
            server.status = McpServer.Status.NEEDS_APPROVAL
        server.save()
        audit_change(
            action="mcp_server.refreshed",
            target=server.name,
            before=before,
            after={**_audited(server), "pending_hash": server.pending_hash},
        )
    return server


def mcp_server_approve(*, server: McpServer) -> McpServer:
    with transaction.atomic():
        server = McpServer.objects.select_for_update().get(pk=server.pk)
        if server.status != McpServer.Status.NEEDS_APPROVAL:
            return server
        before = _audited(server)
        server.tools = _allowed(server.pending_tools, server.allowed_tools)
        server.tools_hash = server.pending_hash
        server.pending_tools, server.pending_hash = [], ""
        server.status = McpServer.Status.ACTIVE
        server.save()
        audit_change(
            action="mcp_server.approved", target=server.name, before=before, after=_audited(server)
        )
        _rebuild_users(server.name)
    return server


def mcp_server_delete(*, server: McpServer) -> None:
    from orchestrators.models import OrchestratorInstance

    users = [
        i.slug for i in OrchestratorInstance.objects.all() if f"{PREFIX}{server.name}" in i.tools
    ]
    if users:
        raise ApplicationError(
            f"In use by orchestrators: {', '.join(users)}.", "in_use", {"orchestrators": users}
        )
    with transaction.atomic():
        audit_change(action="mcp_server.deleted", target=server.name, before=_audited(server))
        server.delete()


def _rebuild_users(name: str) -> None:
    from orchestrators import services
    from orchestrators.models import OrchestratorInstance

    for instance in OrchestratorInstance.objects.exclude(
        status=OrchestratorInstance.Status.SUSPENDED
    ).select_related("llm_config"):
        if f"{PREFIX}{name}" in instance.tools:
            try:
                services.orchestrator_rebuild(instance=instance)
            except ApplicationError as exc:
                logger.warning("orchestrator not rebuilt", extra={"error": exc.message})


# --- orchestrators ------------------------------------------------------------------------------


def _wanted(instance) -> dict[str, set[str] | None]:
    """Server name → the tools wanted (None: every approved tool): from `mcp:<name>` in the
    orchestrator's tools, and from the `mcp_servers` its locked plugins reference."""
    from plugins import selectors

    wanted: dict[str, set[str] | None] = {
        t[len(PREFIX) :]: None for t in instance.tools or [] if t.startswith(PREFIX)
    }
    for pid, pinned in sorted((instance.plugin_lock or {}).items()):
        row = selectors.locked_row(pid, pinned)
        for ref in row.manifest.get("provides", {}).get("mcp_servers", []) if row else []:
            if ref["name"] in wanted and wanted[ref["name"]] is None:
                continue
            allowed = set(ref["allowed_tools"]) if "allowed_tools" in ref else None
            current = wanted.get(ref["name"], set())
            wanted[ref["name"]] = None if allowed is None else (current or set()) | allowed
    return wanted


def references(instance) -> list[str]:
    return sorted(_wanted(instance))


def _servers(names: list[str]) -> dict[str, McpServer]:
    return {s.name: s for s in McpServer.objects.filter(name__in=names)}


def mcp_refs_check(instance) -> None:
    """Every `mcp:<name>` an orchestrator names is registered here and approved."""
    names = references(instance)
    found = _servers(names)
    for name in names:
        server = found.get(name)
        if server is None:
            raise ApplicationError(
                f"No MCP server named {name!r} in this organization.",
                "unknown_tool",
                {"field": "tools"},
            )
        if server.status != McpServer.Status.ACTIVE:
            raise ApplicationError(
                f"The MCP server {name}'s tool list changed; an admin must approve it before use.",
                "mcp_needs_approval",
                {"field": "tools"},
            )


def mcp_material(instance) -> dict[str, str]:
    """For the configuration hash: each referenced server's approved tool-list hash."""
    return {name: s.tools_hash for name, s in sorted(_servers(references(instance)).items())}


def _block(schema_name: str, server_id: str, tools: list[dict], digest: str) -> None:
    from django_tenants.utils import schema_context

    with schema_context(schema_name):
        McpServer.objects.filter(pk=server_id, status=McpServer.Status.ACTIVE).update(
            status=McpServer.Status.NEEDS_APPROVAL, pending_tools=tools, pending_hash=digest
        )


def _result(called) -> Any:
    if called.structured_content is not None:
        value = called.structured_content
        value = value.get("result", value) if isinstance(value, dict) and len(value) == 1 else value
    else:
        value = "".join(getattr(c, "text", "") for c in called.content)[:MAX_RESULT_CHARS]
    return {"error": value} if called.is_error else value


def mcp_tools(instance, *, taken: set[str]) -> list:
    from asgiref.sync import sync_to_async

    from orchestrators.tools import make_tool

    schema_name = connection.schema_name
    tools = []
    names = set(taken)
    wanted = _wanted(instance)
    for name, server in sorted(_servers(list(wanted)).items()):
        credential = crypto.decrypt(server.credential_encrypted)
        for spec in server.tools:
            if wanted[name] is not None and spec["name"] not in wanted[name]:
                continue
            tool_name = spec["name"] if spec["name"] not in names else f"{name}__{spec['name']}"
            names.add(tool_name)

            def call_for(server=server, credential=credential, remote=spec["name"]):
                async def call(args: dict[str, Any], context) -> Any:
                    key = (schema_name, str(server.id))
                    mode = _connect_mode(server.mode, server.protocol_version)
                    try:
                        async with _Session(server.url, mode, credential) as client:
                            seen = _checked.get(key)
                            fresh = seen is not None and seen[1] == server.tools_hash
                            if fresh and time.monotonic() - seen[0] < LIST_CHECK_INTERVAL:
                                return _result(await client.call_tool(remote, args))
                            listed = _tool_dicts(await client.list_tools())
                            digest = tools_digest(listed)
                            _checked[key] = (time.monotonic(), digest)
                            if digest != server.tools_hash:
                                # Thread-sensitive, like Django's own async views: the
                                # request's connection (and transaction) does the write.
                                await sync_to_async(_block)(
                                    schema_name, str(server.id), listed, digest
                                )
                                return {
                                    "error": f"The MCP server {server.name}'s tool list changed; "
                                    "an admin must approve it before its tools can be used."
                                }
                            return _result(await client.call_tool(remote, args))
                    except Exception as exc:
                        return {"error": f"The MCP call failed: {_reason(exc)}"}

                return call

            schema = spec.get("input_schema") or {"type": "object"}
            tools.append(
                make_tool(tool_name, spec.get("description") or spec["name"], schema, call_for())
            )
    return tools
