"""One chat turn: the user's message stored first, the reply streamed, stored whatever the client does.

A turn runs in its own asyncio task, not in the request or consumer that started it: a client that
goes away does not stop the generation, and the reply is stored when it ends. Its events go to
local subscribers (an unbounded queue: the SSE response of the request that started it) and to a
Redis stream per conversation that every WebSocket tab reads (XREAD), so no token is dropped the
way channels' capacity-limited group_send would drop it. Tokens are coalesced every ~40 ms, and
frames published while a write is in flight are written together, in order, as one entry, by
one writer per event loop for all its turns (`_Fanout`): at 500 conversations replying at once,
a pipeline per turn and write was a ninth of the server's CPU; now one round trip carries every
turn's waiting frames.

Cancelling: `turn_cancel` cancels a local task at once, and sets a Redis flag that a turn running
in another process checks on every flush.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings

from cadence_site.aredis import async_redis
from cadence_site.loops import LoopLocal
from chat import services
from chat.models import Conversation, Message
from engine.runs import pipeline, runlog
from engine.runs.owners import owner_token
from orchestrators.runtime import (
    RuntimeEvent,
    StepEvent,
    TokenEvent,
    ToolCallEvent,
    ToolResultEvent,
)

logger = logging.getLogger(__name__)
# json.dumps(frame, default=str) without a new encoder per frame (json.dumps builds one whenever
# it is given options): a turn publishes a frame per step start and end.
_frame_json = json.JSONEncoder(default=str).encode

COALESCE_SECONDS = 0.04
STREAM_MAXLEN = 5000
STREAM_TTL = 24 * 3600
_active: dict[tuple[str, str], Turn] = {}


def stream_key(schema_name: str, conversation_id: str) -> str:
    return f"cadence:chat:{schema_name}:{conversation_id}"


def cancel_key(schema_name: str, message_id: str) -> str:
    return f"cadence:chat-cancel:{schema_name}:{message_id}"


# redis.asyncio connections belong to the event loop that opened them. Many turns publish at
# once: the pool is sized well past redis-py's default of 100 connections.
_clients: LoopLocal[aioredis.Redis] = LoopLocal(
    lambda: async_redis(
        settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=10, max_connections=2000
    )
)


def redis_client() -> aioredis.Redis:
    return _clients.get()


# A conversation's stream is kept STREAM_TTL after its newest entry, give or take this much: the
# expiry is set with a turn's first write and again only when this long has passed.
EXPIRE_EVERY = 3600


class _Fanout:
    """Writes every turn's waiting frames to their conversations' streams, one pipeline (one
    round trip) for all the turns of this event loop that have some, in rounds: frames a turn
    publishes while a round is in flight go in the next one, so each turn's entries keep their
    order. `round` is the future of the round that will take what is waiting now."""

    def __init__(self) -> None:
        self.waiting: dict[Turn, None] = {}
        self.round: asyncio.Future = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task | None = None

    def want(self, turn: Turn) -> asyncio.Future:
        self.waiting[turn] = None
        if self.task is None or self.task.done():
            # Its own context: what the writer logs belongs to no run's log.
            context = contextvars.copy_context()
            context.run(runlog.current_binding.set, None)
            self.task = asyncio.get_running_loop().create_task(self._run(), context=context)
        return self.round

    async def _run(self) -> None:
        try:
            while self.waiting:
                turns, self.waiting = list(self.waiting), {}
                done = self.round
                self.round = asyncio.get_running_loop().create_future()
                try:
                    await self._write(turns)
                finally:
                    if not done.done():
                        done.set_result(None)
        except BaseException:
            # Cancelled or failed: no task resolves the next round, so its turns' drain would
            # never end. They are let go; what they wait with goes with the next publish's round.
            done, self.round = self.round, asyncio.get_running_loop().create_future()
            done.set_result(None)
            raise

    @staticmethod
    async def _write(turns: list[Turn]) -> None:
        now = time.monotonic()
        pipe = redis_client().pipeline(transaction=False)
        written: list[tuple[Turn, int]] = []
        for turn in turns:
            batch, turn.outbox = turn.outbox, []
            if not batch:
                continue
            key = stream_key(turn.start.schema_name, turn.start.conversation_id)
            # JSON text holds no raw newline: it separates the frames of one entry.
            pipe.xadd(key, {"e": "\n".join(batch)}, maxlen=STREAM_MAXLEN, approximate=True)
            written.append((turn, len(batch)))
            if turn.expired_at is None or now - turn.expired_at >= EXPIRE_EVERY:
                pipe.expire(key, STREAM_TTL)
                turn.expired_at = now
                written.append((turn, 0))
        if not written:
            return
        try:
            # No MULTI: each entry is written whatever the others and the expiries do.
            results = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            results = [exc] * len(written)
        for (turn, frames), result in zip(written, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            # The expiry is set again with the turn's next write: the stream may not exist yet.
            turn.expired_at = None
            if frames:
                # The reply is still stored; live tabs miss these frames until they refetch.
                logger.warning(
                    "chat event not fanned out",
                    extra={"error": type(result).__name__, "frames": frames},
                )


_fanouts: LoopLocal[_Fanout] = LoopLocal(_Fanout)


@dataclass
class TurnStart:
    schema_name: str
    org_slug: str
    conversation_id: str
    orchestrator_id: str
    orchestrator_slug: str
    user_message: dict
    assistant_message_id: str
    assistant_seq: int
    history: list[dict]
    content: str
    principal: str
    trigger: str
    owner_user_id: int | None = None
    owner_api_key_id: str | None = None
    # The caller's organization and, for a key, the key (pipeline.TurnRequest.org_id/key_id).
    org_id: int | None = None
    key_id: str | None = None


def message_output(message: Message) -> dict[str, Any]:
    return {
        "id": str(message.id),
        "conversation": str(message.conversation_id),
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "tool_calls": message.tool_calls,
        "status": message.status,
        "usage": message.usage,
        "error": message.error,
        "run": str(message.run_id) if message.run_id else None,
        "created_at": message.created_at.isoformat(),
    }


def turn_begin(
    *,
    schema_name: str,
    org_slug: str,
    conversation: Conversation,
    content: str,
    principal: str,
    trigger: str,
    org_id: int | None = None,
    key_id: str | None = None,
) -> TurnStart:
    """Synchronous, in the tenant's schema: validate, then store the user's message before any model runs."""
    from cadence_site.errors import ApplicationError
    from orchestrators.models import OrchestratorInstance

    if not isinstance(content, str) or not content.strip():
        raise ApplicationError(
            "A message needs non-empty content.", "invalid_message", {"field": "content"}
        )
    if len(content) > services.MAX_CONTENT:
        raise ApplicationError(
            f"A message is limited to {services.MAX_CONTENT} characters.",
            "message_too_long",
            {"field": "content", "limit": services.MAX_CONTENT},
        )
    instance = conversation.orchestrator
    if instance.status != OrchestratorInstance.Status.READY:
        raise ApplicationError(
            f"The orchestrator {instance.slug!r} is {instance.status}.",
            f"orchestrator_{instance.status}",
            status=409,
        )
    user, assistant = reply_begin(conversation_id=conversation.id, content=content)
    history = services.history_for_model(conversation_id=conversation.id, before_seq=user.seq)
    if not conversation.title:
        conversation.title = content.strip()[:80]  # kept objects (a socket's) stay in step
        Conversation.objects.filter(pk=conversation.pk).update(title=conversation.title)
    return TurnStart(
        schema_name,
        org_slug,
        str(conversation.id),
        str(instance.id),
        instance.slug,
        message_output(user),
        str(assistant.id),
        assistant.seq,
        history,
        content,
        principal,
        trigger,
        conversation.owner_user_id,
        str(conversation.owner_api_key_id) if conversation.owner_api_key_id else None,
        org_id,
        key_id,
    )


def reply_begin(*, conversation_id, content: str) -> tuple[Message, Message]:
    """In the tenant's schema: the user's message, stored before any model runs, and the reply's
    placeholder (so the two keep adjacent sequence numbers); one reply at a time per
    conversation. Every chat trigger, the /v1 conversation extension included, begins here."""
    from django.db import transaction

    from cadence_site.errors import ApplicationError
    from chat.orphans import conversation_free

    def free() -> None:
        # A reply whose process is gone is ended here, so the conversation is usable again.
        if not conversation_free(conversation_id=conversation_id):
            raise ApplicationError(
                "A reply is still being written in this conversation; wait for it or cancel it.",
                "turn_in_progress",
                status=409,
            )

    # One transaction, on the conversation's row, locked by taking the two messages' numbers:
    # two begins at once (two tabs, a tab and REST, two processes) cannot both find the
    # conversation free; both rows are committed before the model runs.
    with transaction.atomic():
        user, assistant = services.messages_append(
            conversation_id=conversation_id,
            check=free,
            messages=[
                {"role": Message.Role.USER, "content": content},
                {
                    "role": Message.Role.ASSISTANT,
                    "content": "",
                    "status": Message.Status.STREAMING,
                    "owner": owner_token(),
                },
            ],
        )
    return user, assistant


@dataclass
class Turn:
    start: TurnStart
    subscribers: list[asyncio.Queue] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    tool_calls: list[dict] = field(default_factory=list)
    task: asyncio.Task | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    result: dict | None = None
    outbox: list[str] = field(default_factory=list)  # frames not yet written to the stream
    written: asyncio.Future | None = None  # the fan-out round that takes the outbox
    expired_at: float | None = None  # when the stream's expiry was last set (monotonic)

    __hash__ = object.__hash__  # a turn is itself, whatever it holds (a key of `_Fanout`)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self.subscribers.append(queue)
        return queue

    async def publish(self, event: dict) -> None:
        """To local subscribers now, and to the conversation's stream by the loop's fan-out:
        frames published while a write is in flight go together in the next write, in order, as
        one stream entry (a turn's step, token and done frames cost a few round trips and
        entries, not one each; cadence_site.streams.relay hands a socket each frame of an entry
        as a message of its own)."""
        for queue in self.subscribers:
            queue.put_nowait(event)
        self.outbox.append(_frame_json(event))
        self.written = _fanouts.get().want(self)

    async def drain(self) -> None:
        """Until every frame published so far is written to the stream (or given up)."""
        while self.written is not None and not self.written.done():
            await asyncio.shield(self.written)


def turn_launch(start: TurnStart) -> Turn:
    """Start the turn's task on the running loop; it outlives the caller."""
    turn = Turn(start)
    turn.task = pipeline.turn_launch(_run(turn))
    _active[(start.schema_name, start.conversation_id)] = turn
    return turn


async def turn_cancel(*, schema_name: str, conversation_id: str, message_id: str | None) -> bool:
    turn = _active.get((schema_name, conversation_id))
    if turn is not None and turn.task is not None and not turn.task.done():
        task = turn.task
        # A REST cancel runs on another thread's loop: Task.cancel is not thread-safe.
        if task.get_loop() is asyncio.get_running_loop():
            task.cancel()
        else:
            task.get_loop().call_soon_threadsafe(task.cancel)
        return True
    if message_id:
        try:
            await redis_client().set(cancel_key(schema_name, message_id), "1", ex=600)
        except Exception as exc:
            # The reply runs in another process, reachable only through Redis.
            from cadence_site.errors import ApplicationError

            logger.warning("cancel flag not set", extra={"error": type(exc).__name__})
            raise ApplicationError(
                "The reply runs on another server and cannot be reached right now; try again.",
                "cancel_unavailable",
                status=503,
            ) from None
        return True
    return False


async def reply_cancel(*, schema_name: str, conversation_id: str, message_id: str | None) -> bool:
    """Cancel the reply being written: a reply whose process is gone is ended `cancelled` here
    and now (its text kept); a live one is cancelled where it runs (`turn_cancel`). The cancel
    is recorded with the reply either way, so a reply whose process dies before it sees the
    cancel ends `cancelled` too. Whether a reply was being written."""
    from chat.orphans import reply_cancel_request
    from tenants.context import in_tenant

    if not message_id:
        return False
    if await in_tenant(
        schema_name,
        reply_cancel_request,
        conversation_id=conversation_id,
        message_id=message_id,
    ):
        return True
    return await turn_cancel(
        schema_name=schema_name, conversation_id=conversation_id, message_id=message_id
    )


CANCEL_POLL_SECONDS = 0.25  # how often a loop looks for the cancel flags of its running turns


class _CancelFlags:
    """Cancels asked from another process (a Redis flag per reply, `turn_cancel`), looked for
    every CANCEL_POLL_SECONDS for all of one event loop's running turns in one MGET: a round
    trip per loop, not one per turn (at 500 streaming replies, 2,000 EXISTS a second). With
    Redis away, no cancel is seen (the turn goes on: losing Redis slows Cadence, it does not fail
    replies)."""

    def __init__(self) -> None:
        self.flags: dict[str, asyncio.Event] = {}
        self.task: asyncio.Task | None = None

    def watch(self, flag: str) -> asyncio.Event:
        event = self.flags[flag] = asyncio.Event()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        return event

    def forget(self, flag: str) -> None:
        self.flags.pop(flag, None)

    async def _run(self) -> None:
        client = redis_client()
        while self.flags:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            flags = list(self.flags)
            if not flags:
                continue
            try:
                values = await client.mget(flags)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("cancel flags unreadable", extra={"error": type(exc).__name__})
                continue
            for flag, value in zip(flags, values, strict=True):
                event = self.flags.get(flag)
                if value is not None and event is not None:
                    event.set()


_cancel_flags_by_loop: LoopLocal[_CancelFlags] = LoopLocal(lambda: _CancelFlags())


def _cancel_flags() -> _CancelFlags:
    return _cancel_flags_by_loop.get()


async def _run(turn: Turn) -> None:
    """Chat's delivery of one pipeline turn: coalesced token frames, tool and step frames, the
    reply stored with the run, then the error and done frames."""
    s = turn.start
    pending: list[str] = []
    last_flush = time.monotonic()
    cancel_flag = cancel_key(s.schema_name, s.assistant_message_id)
    cancels = _cancel_flags()
    cancel_asked = cancels.watch(cancel_flag)

    async def flush() -> None:
        nonlocal last_flush
        if pending:
            delta = "".join(pending)
            pending.clear()
            await turn.publish(
                {"type": "token", "message_id": s.assistant_message_id, "delta": delta}
            )
        last_flush = time.monotonic()
        # A cancel from another process: its Redis flag, seen by the loop's watcher (_CancelFlags).
        if cancel_asked.is_set():
            raise asyncio.CancelledError("cancelled by the client")

    async def on_event(event: RuntimeEvent) -> None:
        if isinstance(event, TokenEvent):
            turn.text.append(event.delta)
            pending.append(event.delta)
            if time.monotonic() - last_flush >= COALESCE_SECONDS:
                await flush()
            return
        await flush()
        frame = _frame(event, s.assistant_message_id)
        if frame is not None:
            await turn.publish(frame)

    await turn.publish(
        {
            "type": "message.created",
            "message": s.user_message,
            "reply_to": s.assistant_message_id,
            "reply_seq": s.assistant_seq,
        }
    )
    try:
        outcome = await pipeline.turn_run(
            pipeline.TurnRequest(
                schema_name=s.schema_name,
                org_slug=s.org_slug,
                ref=s.orchestrator_id,
                message=s.content,
                history=s.history,
                trigger=s.trigger,
                principal=s.principal,
                conversation_id=s.conversation_id,
                owner_user_id=s.owner_user_id,
                owner_api_key_id=s.owner_api_key_id,
                org_id=s.org_id,
                key_id=s.key_id,
            ),
            on_event=on_event,
            store=lambda outcome: reply_store(message_id=s.assistant_message_id, outcome=outcome),
        )
        if outcome.status == "succeeded":
            await flush()
    finally:
        cancels.forget(cancel_flag)
        _active.pop((s.schema_name, s.conversation_id), None)
    # Shielded: a second cancel must not lose the frames that end the reply.
    await asyncio.shield(_deliver_end(turn, outcome))


def _frame(event: RuntimeEvent, message_id: str) -> dict | None:
    if isinstance(event, ToolCallEvent):
        return {
            "type": "tool_call",
            "message_id": message_id,
            "id": event.id,
            "name": event.name,
            "arguments": event.arguments,
        }
    if isinstance(event, ToolResultEvent):
        return {
            "type": "tool_result",
            "message_id": message_id,
            "id": event.id,
            "name": event.name,
            "result": event.result,
            "error": event.error,
        }
    if isinstance(event, StepEvent):
        return {
            "type": "step",
            "message_id": message_id,
            "name": event.name,
            "status": event.status,
            "duration_ms": event.duration_ms,
        }
    return None


_MESSAGE_STATUS = {
    "succeeded": Message.Status.COMPLETE,
    "failed": Message.Status.FAILED,
    "cancelled": Message.Status.CANCELLED,
}


def reply_store(*, message_id: str, outcome: pipeline.TurnOutcome) -> None:
    """The assistant's reply as the run ended (in the tenant's schema, inside the run's own
    transaction): every chat trigger, the /v1 conversation extension included, stores it here."""
    status = _MESSAGE_STATUS[outcome.status]
    services.message_finish(
        message_id=message_id,
        status=status,
        content=outcome.content,
        usage=outcome.usage,
        error=outcome.error_text if status == Message.Status.FAILED else "",
        tool_calls=outcome.tool_calls,
        run_id=outcome.run_id if outcome.recorded else None,
    )


async def _deliver_end(turn: Turn, outcome: pipeline.TurnOutcome) -> None:
    s = turn.start
    status = _MESSAGE_STATUS[outcome.status]
    error = outcome.error_text if status == Message.Status.FAILED else ""
    if status == Message.Status.FAILED and outcome.error is not None:
        await turn.publish(
            {
                "type": "error",
                "message_id": s.assistant_message_id,
                "code": outcome.error.code,
                "message": outcome.error.message,
            }
        )
    turn.tool_calls = outcome.tool_calls
    turn.result = {
        "type": "done",
        "message_id": s.assistant_message_id,
        "seq": s.assistant_seq,
        "status": status,
        "content": outcome.content,
        "usage": outcome.usage,
        "run": outcome.run_id if outcome.recorded else None,
        "tool_calls": outcome.tool_calls,
        "error": error,
    }
    await turn.publish(turn.result)
    await turn.drain()
    turn.done.set()
