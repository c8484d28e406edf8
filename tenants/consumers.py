"""/ws/orgs/<slug>/audit/: an organization's audit trail, live.

Frames in: {"type": "audit.list", "limit": n}. Frames out: {"type": "audit.events", "events": [...]}
and, as they happen, {"type": "audit.event", ...}. Owners and admins only: it names members and keys.
"""

from __future__ import annotations

import json

from channels.generic.websocket import AsyncWebsocketConsumer

from tenants.audit.models import AuditEvent
from tenants.context import in_tenant
from tenants.groups import org_group
from tenants.roles import Role, role_at_least

MAX_FRAME = 16 * 1024


def audit_event_output(event: AuditEvent) -> dict:
    return {
        "id": str(event.id),
        "action": event.action,
        "actor": event.actor,
        "target": event.target,
        "details": event.details,
        "created_at": event.created_at.isoformat(),
    }


def _audit_list(limit: int) -> list[dict]:
    return [audit_event_output(e) for e in AuditEvent.objects.all()[:limit]]


class AuditConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        if not role_at_least(self.scope.get("role"), Role.ADMIN):
            await self.close(code=4403)
            return
        org = self.scope["org"]
        self.group = org_group(org.id, "audit")
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

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
            frame = json.loads(text_data)
        except ValueError:
            return await self.send_json(
                {
                    "type": "error",
                    "code": "malformed_json",
                    "message": "The frame is not valid JSON.",
                }
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

    async def audit_event(self, message):
        await self.send_json({"type": "audit.event", **message["event"]})
