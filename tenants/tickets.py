"""Single-use WebSocket tickets: 30 s in Redis, redeemed atomically (GETDEL), bound to one organization.

Browsers cannot set headers on a WebSocket handshake, and a key in a URL ends up in logs; a
short-lived ticket that works once is what crosses the URL instead.
"""

from __future__ import annotations

import hashlib
import json
import secrets

import redis
from django.conf import settings

from cadence_site.aredis import sync_redis
from tenants.resolution import OrgRef


def ticket_ttl() -> int:
    return settings.CADENCE_WS_TICKET_TTL


def _client() -> redis.Redis:
    return sync_redis(settings.REDIS_URL, 2)


def _key(ticket: str) -> str:
    # Only a hash of the ticket is stored: a Redis dump does not hand out live tickets. The
    # organization is in the value, not the key, so a ticket is used up by its first
    # presentation, whichever organization's path it was presented at.
    return f"cadence:wsticket:{hashlib.sha256(ticket.encode()).hexdigest()}"


def ticket_issue(*, org: OrgRef, user) -> str:
    ticket = secrets.token_urlsafe(32)
    key = getattr(user, "api_key", None)
    principal = {"api_key_id": str(key.pk)} if key is not None else {"user_id": user.pk}
    try:
        _store(ticket, org, principal)
    except (redis.RedisError, OSError):
        from cadence_site.errors import ApplicationError

        raise ApplicationError(
            "WebSocket tickets are unavailable right now (the ticket store cannot be reached). "
            "Try again shortly, or connect with an API key (Authorization: Bearer).",
            "tickets_unavailable",
            status=503,
        ) from None
    return ticket


def _store(ticket: str, org: OrgRef, principal: dict) -> None:
    _client().set(_key(ticket), json.dumps({"org_id": org.id, **principal}), ex=ticket_ttl())


def ticket_redeem(*, ticket: str) -> dict | None:
    """{"org_id", "user_id" | "api_key_id"} of the ticket, once; None if unknown, expired or used."""
    if not ticket or len(ticket) > 128:
        return None
    raw = _client().getdel(_key(ticket))
    return json.loads(raw) if raw else None
