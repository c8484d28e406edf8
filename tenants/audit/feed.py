"""An organization's audit trail, live: each committed AuditEvent is appended to a Redis stream
that the /ws/orgs/<slug>/audit/ consumers follow through the process's stream hub.

A stream, not a channel-layer group: group_send drops silently for a full channel (FIELD-NOTES),
and a stream lets a socket resume from the last id it saw. The row in the organization's schema is
the record; the stream is the notification, so a Redis outage loses no audit data, only liveness.
"""

from __future__ import annotations

import json
import logging

import redis
from django.conf import settings

from cadence_site.aredis import sync_redis
from tenants.audit.models import AuditEvent

logger = logging.getLogger(__name__)

STREAM_MAXLEN = 1000
_TIMEOUT = 1.0


def audit_stream_key(schema_name: str) -> str:
    return f"cadence:audit:{schema_name}"


def audit_event_output(event: AuditEvent) -> dict:
    return {
        "id": str(event.id),
        "action": event.action,
        "actor": event.actor,
        "target": event.target,
        "details": event.details,
        "created_at": event.created_at.isoformat(),
    }


def _client() -> redis.Redis:
    return sync_redis(settings.REDIS_URL, _TIMEOUT)


def audit_publish(*, schema_name: str, event: AuditEvent) -> None:
    """Announce a committed event to the organization's live feed (best effort)."""
    frame = {"type": "audit.event", **audit_event_output(event)}
    try:
        _client().xadd(
            audit_stream_key(schema_name),
            {"e": json.dumps(frame, default=str)},
            maxlen=STREAM_MAXLEN,
            approximate=True,
        )
    except (redis.RedisError, OSError) as exc:
        logger.warning(
            "audit feed unavailable; event stored but not announced",
            extra={"error": f"{type(exc).__name__}: {exc}", "action": event.action},
        )
