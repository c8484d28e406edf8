"""ASGI middleware for /ws/orgs/<slug>/…: who is connecting, to which organization, and for how long.

WebSocket connections never pass through Django's middleware, so the organization is resolved
and the caller authenticated here. Credentials, first match wins:

1. `?ticket=` — a single-use ticket from POST /api/v1/orgs/<slug>/ws-tickets/ (browsers and any
   client). Redeemed before anything else is checked, so a refused ticket is used up too.
2. An API key: `Authorization: Bearer ck_…`, or the subprotocol convention
   `Sec-WebSocket-Protocol: bearer, ck_…` (browsers cannot set headers; the server answers with
   the `bearer` subprotocol, never echoing the key).
3. The session cookie — the only credential a hostile page could ride, so only this one needs
   an `Origin` that is exactly this server's own (or listed in CSRF_TRUSTED_ORIGINS).

Refusals accept the handshake and close at once with a code and a reason, so every client sees
why (closing before the accept makes the server answer a bare HTTP 403):
4400 a NUL character or a lone surrogate in the path,
4401 not authenticated (no, unknown, used or expired ticket; bad, revoked or expired key),
4403 forbidden (suspended organization, Origin not allowed, role too low, rights lost),
4404 unknown organization or a caller who does not belong to it (the same answer for both),
1013 the ticket store (Redis) cannot be reached: try again later.

Once open, a socket follows its caller's rights (tenants/ws_access.py): it closes within about
a second of a revocation, removal, demotion below what the socket needs or a suspension, and
of a team change that takes its conversation or run out of the caller's sight.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from rest_framework.exceptions import AuthenticationFailed

from cadence_site.inputguard import bad_character
from cadence_site.requestlog import org_var, principal_var
from tenants import access_watch, tickets
from tenants.access import caller_role
from tenants.authentication import ApiKeyPrincipal, api_key_authenticate
from tenants.context import in_public
from tenants.keys import looks_like_key
from tenants.models import ApiKey, Organization
from tenants.resolution import org_by_slug
from tenants.rights import api_key_effective_rights, key_is_live
from tenants.ws_access import LiveAccess, guard

_WS_ORG = re.compile(r"^/ws/orgs/(?P<slug>[^/]+)/")

CLOSE_TRY_AGAIN = 1013  # RFC 6455's "try again later": the ticket store is unreachable
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
BEARER_SUBPROTOCOL = "bearer"


class Refusal(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _principal_from_ticket(ticket: str) -> tuple[int, object]:
    """(org id, principal) of a ticket, once; Refusal when it cannot be used."""
    try:
        redeemed = tickets.ticket_redeem(ticket=ticket)
    except (redis.RedisError, OSError):
        raise Refusal(CLOSE_TRY_AGAIN, "tickets_unavailable: try again shortly") from None
    if redeemed is None:
        raise Refusal(CLOSE_UNAUTHENTICATED, "invalid_ticket: unknown, used or expired")
    org_id = redeemed["org_id"]
    if "user_id" in redeemed:
        user = get_user_model().objects.filter(pk=redeemed["user_id"], is_active=True).first()
        if user is None:
            raise Refusal(CLOSE_UNAUTHENTICATED, "invalid_ticket: the user is no longer active")
        return org_id, user
    key = ApiKey.objects.filter(pk=redeemed["api_key_id"]).first()
    # The key may have been revoked or have expired since the ticket was issued.
    if key is None or not key_is_live(key):
        raise Refusal(CLOSE_UNAUTHENTICATED, "invalid_ticket: the API key is revoked or expired")
    role, until = api_key_effective_rights(key)
    principal = ApiKeyPrincipal(key, role, until)
    if principal.role is None:
        raise Refusal(CLOSE_UNAUTHENTICATED, "api_key_creator_gone")
    return org_id, principal


def _principal_from_key(secret: str) -> tuple[int, ApiKeyPrincipal]:
    try:
        principal = api_key_authenticate(secret)
    except AuthenticationFailed as exc:
        code = exc.get_codes()
        raise Refusal(
            CLOSE_UNAUTHENTICATED, code if isinstance(code, str) else "invalid_api_key"
        ) from None
    return principal.api_key.organization_id, principal


def _resolve(*, slug: str, ticket: str | None, secret: str | None, session_user):
    """(org, principal, role) for the handshake, or Refusal."""
    principal_org = None
    if ticket is not None:
        principal_org, user = _principal_from_ticket(ticket)
    elif secret is not None:
        principal_org, user = _principal_from_key(secret)
    else:
        user = session_user
    org = org_by_slug(slug)
    if org is None:
        raise Refusal(CLOSE_NOT_FOUND, "not_found")
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated:
        raise Refusal(CLOSE_UNAUTHENTICATED, "authentication_required")
    if principal_org is not None and principal_org != org.id:
        raise Refusal(CLOSE_NOT_FOUND, "not_found")
    role = caller_role(user, org)
    if role is None:
        raise Refusal(CLOSE_NOT_FOUND, "not_found")
    # From the database, not org_by_slug's cached row: what the handshake reads here is what the
    # socket's rights version (tenants/ws_access.py) is taken to be current with.
    status = Organization.objects.filter(pk=org.id).values_list("status", flat=True).first()
    if status != Organization.Status.ACTIVE:
        raise Refusal(CLOSE_FORBIDDEN, "org_suspended")
    return org, user, role


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _bearer(scope) -> tuple[str | None, bool]:
    """(API key, whether it came as a subprotocol) from the handshake, if any."""
    scheme, _, token = (_header(scope, b"authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), False
    protocols = [p.strip() for p in scope.get("subprotocols") or []]
    if BEARER_SUBPROTOCOL in protocols:
        keys = [p for p in protocols if looks_like_key(p)]
        return (keys[0] if keys else ""), True
    return None, False


def origin_allowed(scope) -> bool:
    """The Origin of a cookie-authenticated handshake must be this server's own, exactly (no
    wildcard subdomains: another organization's host is another site), or a trusted origin."""
    origin = _header(scope, b"origin")
    host = _header(scope, b"host")
    if not origin or not host:
        return False
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parts = urlsplit(origin)
    secure = scope.get("scheme") == "wss"
    expected_scheme = "https" if secure else "http"
    return parts.scheme == expected_scheme and parts.netloc.lower() == host.lower()


async def refuse(send, code: int, reason: str, subprotocol: str | None = None) -> None:
    """Accept, then close with a code and a reason the client can read (RFC 6455 caps a reason
    at 123 bytes)."""
    accept = {"type": "websocket.accept"}
    if subprotocol:
        accept["subprotocol"] = subprotocol
    await send(accept)
    await send({"type": "websocket.close", "code": code, "reason": reason[:123]})


class TenantWebsocketMiddleware:
    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        match = _WS_ORG.match(scope.get("path", ""))
        if match is None:
            return await self.inner(scope, receive, send)
        if bad_character(scope.get("path", "")):
            await receive()
            return await refuse(send, CLOSE_BAD_REQUEST, "invalid_characters: path")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        ticket = (query.get("ticket") or [None])[0]
        secret, as_subprotocol = (None, False) if ticket is not None else _bearer(scope)
        subprotocol = BEARER_SUBPROTOCOL if as_subprotocol else None
        session_user = None
        refusal: Refusal | None = None
        # Before anything is read (the session's user included): the reads are current with it.
        before = access_watch.stamp()
        if ticket is None and secret is None:
            session_user = scope.get("user")
            if session_user is not None and hasattr(session_user, "_wrapped"):
                # Channels' lazy user: resolve it off the event loop.
                from channels.auth import get_user

                session_user = await get_user(scope)
            if getattr(session_user, "is_authenticated", False) and not origin_allowed(scope):
                refusal = Refusal(CLOSE_FORBIDDEN, "origin_not_allowed")
        org = user = role = None
        if refusal is None:
            try:
                org, user, role = await in_public(
                    _resolve,
                    slug=match["slug"],
                    ticket=ticket,
                    secret=secret,
                    session_user=session_user,
                )
            except Refusal as exc:
                refusal = exc
        message = await receive()  # the websocket.connect event
        if message.get("type") != "websocket.connect":
            return
        if refusal is not None:
            return await refuse(send, refusal.code, refusal.reason, subprotocol)

        access = LiveAccess(org=org, user=user, role=role)
        if before is not None:
            # Taken first, then confirmed: nothing counted since `before` (the reads' start).
            seen = access_watch.version(org.id, org.schema_name)
            if access_watch.stamp() == before:
                access.version = seen
        scope = dict(scope, org=org, user=user, role=role, org_slug=org.slug, access=access)
        tokens = (org_var.set(org.slug), principal_var.set(access.principal_label))
        try:
            return await guard(
                self.inner, scope, message, receive, send, access=access, subprotocol=subprotocol
            )
        finally:
            org_var.reset(tokens[0])
            principal_var.reset(tokens[1])
