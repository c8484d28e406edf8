"""/ws/orgs/<slug>/audit/: an organization's audit trail, live.

Frames in: {"type": "audit.list", "limit": n}. Frames out: {"type": "audit.events", "events": [...]}
and, as they are committed, {"type": "audit.event", ...} (tenants/audit/feed.py). Owners and admins
only: it names members and keys.
"""

from __future__ import annotations

import asyncio
import json
import logging

from channels.generic.websocket import AsyncWebsocketConsumer

from cadence_site import streams
from cadence_site.inputguard import InputError, json_loads
from tenants.audit.feed import audit_event_output, audit_stream_key
from tenants.audit.models import AuditEvent
from tenants.context import in_tenant
from tenants.roles import Role, role_at_least

logger = logging.getLogger(__name__)
MAX_FRAME = 16 * 1024


def _audit_list(limit: int) -> list[dict]:
    return [audit_event_output(e) for e in AuditEvent.objects.all()[:limit]]


class AuditConsumer(AsyncWebsocketConsumer):
    # Live events come from the organization's audit stream, not the channel layer (see
    # chat/consumers.py): the socket holds no channel-layer receive.
    channel_layer_alias = None

    async def connect(self):
        self.reader = None
        access = self.scope["access"]
        if not role_at_least(access.role, Role.ADMIN):
            await self.accept()
            await self.close(code=4403, reason="role_required: admin")
            return
        # Kept for the socket's life: an admin demoted while watching is disconnected.
        access.require(Role.ADMIN)
        key = audit_stream_key(self.scope["org"].schema_name)
        try:
            start_id = await streams.hub().latest_id(key)
        except Exception as exc:  # Redis away: audit.list still answers from the database
            logger.warning("audit feed position unavailable", extra={"error": str(exc)})
            start_id = streams.now_id()
        await self.accept()
        self.reader = asyncio.create_task(streams.relay(key, start_id, self.send))

    async def disconnect(self, code):
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)

    async def send_json(self, payload: dict) -> None:
        await self.send(text_data=json.dumps(payload))

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None or len(text_data) > MAX_FRAME:
            return await self.send_json(
                {
                    "type": "error",
                    "code": "invalid_frame",
                    "message": f"Send JSON text frames under {MAX_FRAME} bytes.",
                }
            )
        try:
            frame = json_loads(text_data, prefix="frame")
        except InputError as exc:
            return await self.send_json(
                {"type": "error", "code": exc.code, "message": exc.message, "field": exc.field}
            )
        if not isinstance(frame, dict) or frame.get("type") != "audit.list":
            return await self.send_json(
                {
                    "type": "error",
                    "code": "unknown_type",
                    "message": 'Expected {"type": "audit.list"}.',
                }
            )
        limit = frame.get("limit", 50)
        if not isinstance(limit, int) or not 1 <= limit <= 500:
            return await self.send_json(
                {
                    "type": "error",
                    "code": "invalid_limit",
                    "message": "limit must be an integer from 1 to 500.",
                }
            )
        events = await in_tenant(self.scope["org"].schema_name, _audit_list, limit=limit)
        await self.send_json(
            {"type": "audit.events", "org": self.scope["org"].slug, "events": events}
        )
