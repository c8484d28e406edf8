"""Stored responses: a response is a turn of a conversation of the calling key.

Synchronous functions for the tenant's schema (async callers go through tenants.context.in_tenant).
A response's input items and reply are messages of a conversation (`chat.models.Message`), the
`StoredResponse` row maps its id to that conversation and the range of sequence numbers, and
`previous` links it to the response it continued. A follow-up continues the previous response's
conversation when that response is the conversation's latest turn and the model is the same;
otherwise (a fork, or another model) it starts a conversation of its own, and its context is
still exact, since it is read through the chain of `previous` links, not the conversation.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from cadence_site.errors import ApplicationError, NotFoundError
from chat import services
from chat.models import Conversation, Message, StoredResponse
from chat.openai.responses.items import arguments_text

logger = logging.getLogger(__name__)

MAX_CHAIN = 200  # responses followed back through `previous`, at most


def stored_response_get(*, response_id: str, key_id: str) -> StoredResponse:
    """The calling key's own stored response; any other (another key's, another organization's,
    none) is the same NotFoundError."""
    record = (
        StoredResponse.objects.filter(pk=response_id or None, owner_api_key_id=key_id)
        .select_related("conversation")
        .first()
        if response_id
        else None
    )
    if record is None:
        raise NotFoundError("No such response.", "response_not_found")
    return record


def _chat_message(message: Message) -> dict[str, Any] | None:
    if message.role == Message.Role.TOOL:
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id,
            "content": message.content,
        }
    if message.role == Message.Role.ASSISTANT:
        # The client's function calls are marked; the orchestrator's own stay internal.
        calls = [c for c in message.tool_calls if isinstance(c, dict) and c.get("client")]
        if message.status == Message.Status.FAILED or not (message.content or calls):
            return None
        entry: dict[str, Any] = {"role": "assistant", "content": message.content or None}
        if calls:
            entry["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": arguments_text(c["arguments"])},
                }
                for c in calls
            ]
        return entry
    return {"role": message.role, "content": message.content}


def response_history(*, record: StoredResponse) -> list[dict[str, Any]]:
    """The chat-format messages of `record`'s chain, oldest first: whole turns, the latest ones
    that fit the history budget (CADENCE_CHAT_HISTORY_TOKENS); the previous response's own turn
    always."""
    budget = getattr(settings, "CADENCE_CHAT_HISTORY_TOKENS", 6000)
    turns: list[list[dict[str, Any]]] = []
    current: StoredResponse | None = record
    while current is not None and len(turns) < MAX_CHAIN:
        rows = Message.objects.filter(
            conversation_id=current.conversation_id,
            seq__gte=current.first_seq,
            seq__lte=current.last_seq,
        ).order_by("seq")
        turn = [m for m in (_chat_message(row) for row in rows) if m is not None]
        cost = sum(services._estimate_tokens(m.get("content") or "") for m in turn)
        if turns and cost > budget:
            break
        budget -= cost
        turns.append(turn)
        current = (
            StoredResponse.objects.filter(pk=current.previous_id).first()
            if current.previous_id
            else None
        )
    messages = [message for turn in reversed(turns) for message in turn]
    # A result whose call fell out of the budget would be an orphan the model refuses.
    calls = {c["id"] for m in messages for c in m.get("tool_calls") or ()}
    return [m for m in messages if m["role"] != "tool" or m["tool_call_id"] in calls]


def _message_fields(item: dict[str, Any]) -> dict[str, Any]:
    role = item["role"]
    if role == "tool":
        return {
            "role": Message.Role.TOOL,
            "content": item["content"],
            "tool_call_id": item["tool_call_id"],
        }
    if role == "assistant":
        # Stored as every chat trigger stores calls (the chat page shows them), marked the client's.
        calls = [
            {
                "id": c["id"],
                "name": c["function"]["name"],
                "arguments": c["function"]["arguments"],
                "client": True,
            }
            for c in item.get("tool_calls") or ()
        ]
        return {
            "role": Message.Role.ASSISTANT,
            "content": item.get("content") or "",
            "tool_calls": calls,
        }
    return {"role": role, "content": item["content"]}


@transaction.atomic
def response_begin(
    *,
    response_id: str,
    key_id: str,
    instance_id: str,
    previous_id: str | None,
    items: list[dict[str, Any]],
    body: dict[str, Any],
) -> tuple[str, str]:
    """Stores the input items and the reply's placeholder before the model runs; returns the
    conversation's id and the placeholder's. The conversation row is locked so one turn's messages stay contiguous."""
    previous = (
        StoredResponse.objects.select_related("conversation").filter(pk=previous_id).first()
        if previous_id
        else None
    )
    if previous_id and previous is None:  # deleted since the request's context was read
        raise NotFoundError("No such response.", "previous_response_not_found")
    conversation = None
    if previous is not None and str(previous.conversation.orchestrator_id) == str(instance_id):
        locked = Conversation.objects.select_for_update().get(pk=previous.conversation_id)
        if locked.last_seq == previous.last_seq:  # the latest turn: continue it, else a fork
            conversation = locked
    if conversation is None:
        first_text = next((i["content"] for i in items if i["role"] == "user"), "") or ""
        conversation = Conversation.objects.create(
            orchestrator_id=instance_id,
            owner_api_key_id=key_id,
            title=first_text.strip()[:80],
            metadata={"source": "/v1/responses"},
        )
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    first = None
    for item in items:
        message = services.message_append(conversation_id=conversation.id, **_message_fields(item))
        first = first or message
    assistant = services.message_append(
        conversation_id=conversation.id,
        role=Message.Role.ASSISTANT,
        content="",
        status=Message.Status.STREAMING,
    )
    StoredResponse.objects.create(
        id=response_id,
        conversation=conversation,
        previous=previous,
        owner_api_key_id=key_id,
        first_seq=(first or assistant).seq,
        last_seq=assistant.seq,
        body=body,
    )
    return str(conversation.id), str(assistant.id)


_MESSAGE_STATUS = {
    "completed": Message.Status.COMPLETE,
    "incomplete": Message.Status.COMPLETE,
    "failed": Message.Status.FAILED,
    "cancelled": Message.Status.CANCELLED,
}


def response_finish(
    *,
    response_id: str,
    message_id: str,
    body: dict[str, Any],
    content: str,
    usage: dict[str, int],
    error: str,
    tool_calls: list[dict[str, Any]],
    run_id: str | None,
    cancelled: bool = False,
) -> None:
    """The reply and the response object as the turn ended (inside the run's transaction)."""
    status = "cancelled" if cancelled else body["status"]
    services.message_finish(
        message_id=message_id,
        status=_MESSAGE_STATUS[status],
        content=content,
        usage=usage,
        error=error if status == "failed" else "",
        tool_calls=tool_calls,
        run_id=run_id,
    )
    updated = StoredResponse.objects.filter(pk=response_id).update(status=body["status"], body=body)
    if not updated:  # its conversation was deleted meanwhile: nothing left to keep
        logger.info("stored response gone before it finished", extra={"response": response_id})


def previous_check(*, record: StoredResponse) -> None:
    if record.status == StoredResponse.Status.IN_PROGRESS:
        raise ApplicationError(
            f"Previous response with id 'resp_{record.id.hex}' is still in progress.",
            "previous_response_in_progress",
            status=400,
        )
