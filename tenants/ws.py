"""ASGI middleware for /ws/orgs/<slug>/…: puts the organization and the authenticated caller in the scope.

WebSocket connections never pass through Django's middleware, so the organization is resolved
here, and the caller is authenticated by session cookie (Channels' AuthMiddleware, applied
outside this one) or by a single-use `?ticket=`. Refusals close before the handshake is
accepted: 4404 for an unknown organization and a non-member alike, 4403 for a suspended one,
4401 when no credentials came.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser

from cadence_site.requestlog import org_var
from tenants import tickets
from tenants.access import caller_role
from tenants.authentication import ApiKeyPrincipal
from tenants.context import in_public
from tenants.models import ApiKey
from tenants.resolution import org_by_slug

_WS_ORG = re.compile(r"^/ws/orgs/(?P<slug>[^/]+)/")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


def _principal_from_ticket(org_id: int, ticket: str):
    principal = tickets.ticket_redeem(org_id=org_id, ticket=ticket)
    if principal is None:
        return None
    if "user_id" in principal:
        return get_user_model().objects.filter(pk=principal["user_id"], is_active=True).first()
    key = (
        ApiKey.objects.filter(pk=principal["api_key_id"], revoked_at__isnull=True)
        .select_related("organization")
        .first()
    )
    return ApiKeyPrincipal(key) if key else None


def _resolve(slug: str, user, ticket: str | None):
    org = org_by_slug(slug)
    if org is None:
        return None, None, None
    if ticket:
        user = _principal_from_ticket(org.id, ticket)
    role = caller_role(user, org) if user is not None else None
    return org, user, role


async def _refuse(send, code: int) -> None:
    # Closing before accept: the server answers the handshake with 403, and Channels/uvicorn
    # report the close code to ASGI test clients.
    await send({"type": "websocket.close", "code": code})


class TenantWebsocketMiddleware:
    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        match = _WS_ORG.match(scope.get("path", ""))
        if match is None:
            return await self.inner(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        ticket = (query.get("ticket") or [None])[0]
        session_user = scope.get("user")
        if session_user is not None and hasattr(session_user, "_wrapped") and not ticket:
            # Channels' lazy user: resolve it off the event loop.
            from channels.auth import get_user

            session_user = await get_user(scope)
        org, user, role = await in_public(
            _resolve, slug=match["slug"], user=None if ticket else session_user, ticket=ticket
        )
        message = await receive()  # the websocket.connect event
        if message.get("type") != "websocket.connect":
            return
        if org is None or (
            role is None and user is not None and not isinstance(user, AnonymousUser)
        ):
            return await _refuse(send, CLOSE_NOT_FOUND)
        if role is None:
            return await _refuse(send, CLOSE_UNAUTHENTICATED if not ticket else CLOSE_NOT_FOUND)
        if not org.is_active:
            return await _refuse(send, CLOSE_FORBIDDEN)

        replayed = False

        async def replay_receive():
            nonlocal replayed
            if not replayed:
                replayed = True
                return message
            return await receive()

        scope = dict(scope, org=org, user=user, role=role, org_slug=org.slug)
        token = org_var.set(org.slug)
        try:
            return await self.inner(scope, replay_receive, send)
        finally:
            org_var.reset(token)
