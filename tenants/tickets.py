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


def _key(org_id: int, ticket: str) -> str:
    # Only a hash of the ticket is stored: a Redis dump does not hand out live tickets.
    return f"cadence:wsticket:{org_id}:{hashlib.sha256(ticket.encode()).hexdigest()}"


def ticket_issue(*, org: OrgRef, user) -> str:
    ticket = secrets.token_urlsafe(32)
    key = getattr(user, "api_key", None)
    principal = {"api_key_id": str(key.pk)} if key is not None else {"user_id": user.pk}
    _client().set(_key(org.id, ticket), json.dumps(principal), ex=ticket_ttl())
    return ticket


def ticket_redeem(*, org_id: int, ticket: str) -> dict | None:
    """The ticket's principal, once; None if unknown, expired, used or issued for another org."""
    if not ticket or len(ticket) > 128:
        return None
    raw = _client().getdel(_key(org_id, ticket))
    return json.loads(raw) if raw else None
