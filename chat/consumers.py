"""/ws/orgs/<slug>/conversations/<id>/: chat over a WebSocket.

Client frames: {"type": "message", "content"}, {"type": "cancel"}.
Server frames: message.created, token {"delta"}, tool_call, tool_result, step,
done {"message_id", "usage"}, error {"code", "message"}.

Every tab reads the conversation's Redis stream (chat/turns.py), so all tabs see every reply, from
whichever process runs it, with no token dropped. A malformed frame gets an error frame and the
connection stays open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from channels.generic.websocket import AsyncWebsocketConsumer

from cadence_site import streams
from cadence_site.inputguard import InputError, json_loads
from chat import services, turns
from tenants import access_watch
from tenants.context import in_tenant, in_tenant_green
from tenants.roles import Role, role_at_least
from tenants.teams.scoping import require_level, team_scope
from tenants.ws_access import SKIP_MAX_AGE

logger = logging.getLogger(__name__)
MAX_FRAME = services.MAX_CONTENT + 1024
CLOSE_NOT_FOUND = 4404


def _scope(principal, role):
    # Read in the tenant's schema, with the caller's current role (tenants/ws_access.py): a
    # socket follows team changes at once (ConversationConsumer._gone) and at every frame.
    return team_scope(principal, role)


def _load_conversation(*, principal, role, conversation_id):
    """The conversation (its orchestrator fetched with it, inside the schema) if the caller sees
    it, and whether they may also take turns in it (use its orchestrator)."""
    from cadence_site.errors import ApplicationError

    scope = _scope(principal, role)
    conversation = services.conversation_get(
        principal=principal, scope=scope, conversation_id=conversation_id
    )
    try:
        require_level(
            scope, kind="orchestrator", obj=conversation.orchestrator, level="use", what="x"
        )
    except ApplicationError:
        return conversation, False
    return conversation, True


def _begin(*, schema_name, org_slug, org_id, principal, role, conversation_id, content, kept=None):
    """The turn's start and the conversation it was read with. `kept`: the conversation as the
    socket read it last, used instead of reading it again (the caller knows nothing it
    depends on changed since: ConversationConsumer._conversation_kept)."""
    conversation = kept or services.conversation_for_turn(
        principal=principal, scope=_scope(principal, role), conversation_id=conversation_id
    )
    key = getattr(principal, "api_key", None)
    return conversation, turns.turn_begin(
        schema_name=schema_name,
        org_slug=org_slug,
        conversation=conversation,
        content=content,
        principal=str(principal),
        trigger="chat",
        org_id=org_id,
        key_id=str(key.pk) if key is not None else None,
    )


def _streaming_message_id(*, principal, role, conversation_id):
    conversation = services.conversation_get(
        principal=principal, scope=_scope(principal, role), conversation_id=conversation_id
    )
    found = conversation.messages.filter(status="streaming").values_list("id", flat=True).first()
    return str(found) if found else None


class ConversationConsumer(AsyncWebsocketConsumer):
    # Frames come from the conversation's Redis stream (cadence_site/streams.py), never from the channel
    # layer, so the socket holds no channel-layer receive: no BZPOPMIN whose 5 s block races
    # redis-py's 5 s read timeout and closes an idle socket.
    channel_layer_alias = None

    async def dispatch(self, message):
        """AsyncConsumer.dispatch without the close_old_connections() channels runs before every
        handler: a hop to the thread-sensitive thread and back per frame (one of a chat
        message's four), to close connections on a thread this consumer never queries from (its
        every database call is an in_tenant on a pool thread, which closes stale connections
        around the call itself)."""
        from channels.consumer import get_handler_name

        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self):
        from cadence_site.errors import ApplicationError

        self.org = self.scope["org"]
        self.principal = self.scope["user"]
        self.conversation_id = str(self.scope["url_route"]["kwargs"]["conversation_id"])
        # Closed when a team change takes the conversation out of the caller's sight.
        self.scope["access"].follow(self._gone)
        role = self.scope["access"].role
        seen = access_watch.version(self.org.id, self.org.schema_name)
        try:
            conversation, usable = await in_tenant(
                self.org.schema_name,
                _load_conversation,
                principal=self.principal,
                role=role,
                conversation_id=self.conversation_id,
            )
        except ApplicationError:
            await self.accept()
            await self.close(code=CLOSE_NOT_FOUND, reason="conversation_not_found")
            return
        # Read from the stream's current end, taken before accepting: nothing written after the
        # handshake can slip between the accept and the first read.
        # Kept for the first turn too (see _conversation_kept).
        self._kept = (
            (seen, role, conversation, time.monotonic()) if seen is not None and usable else None
        )
        key = turns.stream_key(self.org.schema_name, self.conversation_id)
        try:
            latest = await turns.redis_client().xrevrange(key, count=1)
            start_id = latest[0][0] if latest else "0-0"
        except Exception as exc:  # Redis away: the tab still works, it catches up over REST
            logger.warning("chat stream position unavailable", extra={"error": str(exc)})
            start_id = streams.now_id()
        self.reader = None
        await self.accept()
        # The conversation's events as they are written, from any process.
        self.reader = asyncio.create_task(streams.relay(key, start_id, self.send))

    async def _gone(self) -> tuple[int, str] | None:
        """(close code, reason) once the caller no longer sees the conversation (it left the
        team, the orchestrator was unshared or moved; tenants/ws_access.py asks), else None."""
        from cadence_site.errors import ApplicationError

        try:
            await in_tenant(
                self.org.schema_name,
                _load_conversation,
                principal=self.principal,
                role=self.scope["access"].role,
                conversation_id=self.conversation_id,
            )
        except ApplicationError:
            return CLOSE_NOT_FOUND, "conversation_not_found"
        return None

    async def disconnect(self, code):
        reader = getattr(self, "reader", None)
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def send_json(self, payload: dict) -> None:
        await self.send(text_data=json.dumps(payload, default=str))

    async def _error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})

    async def receive(self, text_data=None, bytes_data=None):
        from cadence_site.errors import ApplicationError

        if text_data is None or len(text_data) > MAX_FRAME:
            return await self._error(
                "invalid_frame", f"Send JSON text frames of at most {MAX_FRAME} characters."
            )
        try:
            # Depth capped before parsing; a NUL or a lone surrogate is refused naming its field.
            frame = json_loads(text_data, prefix="frame")
        except InputError as exc:
            return await self.send_json(
                {"type": "error", "code": exc.code, "message": exc.message, "field": exc.field}
            )
        if not isinstance(frame, dict) or frame.get("type") not in ("message", "cancel"):
            return await self._error(
                "unknown_type",
                'Expected {"type": "message", "content": ...} or {"type": "cancel"}.',
            )
        # The caller's current role (tenants/ws_access.py), not the one it had at the handshake.
        if not role_at_least(self.scope["access"].role, Role.MEMBER):
            return await self._error(
                "role_required", "Viewers can read conversations but not send messages."
            )
        try:
            if frame["type"] == "cancel":
                message_id = await in_tenant(
                    self.org.schema_name,
                    _streaming_message_id,
                    principal=self.principal,
                    role=self.scope["access"].role,
                    conversation_id=self.conversation_id,
                )
                await turns.reply_cancel(
                    schema_name=self.org.schema_name,
                    conversation_id=self.conversation_id,
                    message_id=message_id,
                )
                return
            content = frame.get("content")
            if not isinstance(content, str):
                return await self._error("invalid_message", "content must be a string.")
            role = self.scope["access"].role
            seen = access_watch.version(self.org.id, self.org.schema_name)
            conversation, start = await in_tenant_green(
                self.org.schema_name,
                _begin,
                schema_name=self.org.schema_name,
                org_slug=self.org.slug,
                org_id=self.org.id,
                principal=self.principal,
                role=role,
                conversation_id=self.conversation_id,
                content=content,
                kept=(kept := self._conversation_kept(seen, role)),
            )
            if kept is None:  # read now: kept from now on (a kept one keeps its read time)
                self._kept = (seen, role, conversation, time.monotonic()) if seen else None
        except ApplicationError as exc:
            self._kept = None
            return await self._error(exc.code, exc.message)
        turns.turn_launch(start)

    def _conversation_kept(self, seen: tuple | None, role: str):
        """The conversation (with its orchestrator) this socket's last turn began with, while the
        access watch says nothing that decides it changed since it was read: not the caller's
        rights or teams, the orchestrator's status, team or shares (tenants/access_watch.py).
        A deleted conversation is still refused: the begin's numbering finds no row."""
        kept = getattr(self, "_kept", None)
        if seen is None or kept is None or kept[0] != seen or kept[1] != role:
            return None
        if time.monotonic() - kept[3] >= SKIP_MAX_AGE:
            return None  # read again now and then, whatever the watch says
        return kept[2]
