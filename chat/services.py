"""Conversations and messages: sequence numbers, ownership, the history a model sees.

Synchronous functions that expect to run inside the organization's schema (callers from async
code go through tenants.context.in_tenant).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from cadence_site.errors import ApplicationError, NotFoundError
from chat.models import Conversation, Message
from orchestrators.models import OrchestratorInstance

MAX_CONTENT = 32_000


def owner_fields(principal) -> dict[str, Any]:
    key = getattr(principal, "api_key", None)
    return {"owner_api_key_id": key.pk} if key is not None else {"owner_user_id": principal.pk}


def conversation_list(*, principal):
    return Conversation.objects.filter(**owner_fields(principal)).select_related("orchestrator")


def conversation_get(*, principal, conversation_id) -> Conversation:
    """The caller's own conversation; another member's or organization's is the same 404."""
    conversation = conversation_list(principal=principal).filter(pk=conversation_id).first()
    if conversation is None:
        raise NotFoundError("No such conversation.", "conversation_not_found")
    return conversation


def conversation_create(
    *, principal, orchestrator_ref, title: str = "", metadata: dict | None = None
) -> Conversation:
    qs = OrchestratorInstance.objects.all()
    instance = (
        qs.filter(pk=orchestrator_ref).first()
        if _is_uuid(orchestrator_ref)
        else qs.filter(slug=orchestrator_ref).first()
    )
    if instance is None:
        raise ApplicationError(
            "No such orchestrator in this organization.",
            "unknown_orchestrator",
            {"field": "orchestrator"},
        )
    if instance.status == OrchestratorInstance.Status.SUSPENDED:
        raise ApplicationError(
            "This orchestrator is suspended.",
            "orchestrator_suspended",
            {"field": "orchestrator"},
            status=409,
        )
    return Conversation.objects.create(
        orchestrator=instance, title=title[:200], metadata=metadata or {}, **owner_fields(principal)
    )


def conversation_update(*, conversation: Conversation, **fields: Any) -> Conversation:
    for name, value in fields.items():
        if name not in ("title", "metadata"):
            raise ApplicationError(f"Unknown field {name!r}.", "unknown_field", {"field": name})
        setattr(conversation, name, value)
    conversation.save(update_fields=[*fields, "updated_at"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


def _is_uuid(value) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _next_seqs(*, conversation_id, count: int) -> int:
    """Take `count` sequence numbers of the conversation (its row stays locked until the
    transaction ends, serialising concurrent appends); the last of them. One round trip."""
    pk = Conversation._meta.pk.to_python(conversation_id)  # a bad id fails as the ORM's would
    table = connection.ops.quote_name(Conversation._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET last_seq = last_seq + %s WHERE id = %s RETURNING last_seq",  # noqa: S608 - fixed names
            [count, pk],
        )
        row = cursor.fetchone()
    if row is None:
        raise NotFoundError("No such conversation.", "conversation_not_found")
    return row[0]


def messages_append(*, conversation_id, messages: list[dict[str, Any]]) -> list[Message]:
    """Appends messages (each `message_append`'s keyword arguments but the conversation) with
    consecutive sequence numbers, in one transaction and one INSERT (no savepoint inside a
    caller's transaction: a failure rolls that back)."""
    with transaction.atomic(savepoint=False):
        last = _next_seqs(conversation_id=conversation_id, count=len(messages))
        now = timezone.now()
        rows = [
            Message(
                conversation_id=conversation_id,
                seq=last - len(messages) + 1 + index,
                role=spec["role"],
                content=spec["content"],
                status=spec.get("status", Message.Status.COMPLETE),
                usage=spec.get("usage") or {},
                run_id=spec.get("run_id"),
                tool_calls=spec.get("tool_calls") or [],
                owner=spec.get("owner", ""),
                heartbeat_at=now if spec.get("owner") else None,
            )
            for index, spec in enumerate(messages)
        ]
        return Message.objects.bulk_create(rows)


def message_append(
    *,
    conversation_id,
    role: str,
    content: str,
    status: str = Message.Status.COMPLETE,
    usage: dict | None = None,
    run_id=None,
    tool_calls: list | None = None,
    owner: str = "",
) -> Message:
    """Appends with the next sequence number; concurrent appends are serialised on the conversation
    row. A streaming reply names its `owner` (the process writing it, chat/orphans.py)."""
    (message,) = messages_append(
        conversation_id=conversation_id,
        messages=[
            {
                "role": role,
                "content": content,
                "status": status,
                "usage": usage,
                "run_id": run_id,
                "tool_calls": tool_calls,
                "owner": owner,
            }
        ],
    )
    return message


def message_finish(
    *,
    message_id,
    status: str,
    content: str,
    usage: dict | None = None,
    error: str = "",
    tool_calls: list | None = None,
    run_id=None,
) -> None:
    fields = {
        "status": status,
        "content": content,
        "usage": usage or {},
        "error": error[:5000],
        "tool_calls": tool_calls or [],
    }
    if run_id is not None:
        fields["run_id"] = run_id
    Message.objects.filter(pk=message_id).update(**fields)


def messages_after(
    *, conversation: Conversation, after: int = 0, limit: int = 100
) -> list[Message]:
    return list(conversation.messages.filter(seq__gt=after).order_by("seq")[:limit])


def _estimate_tokens(text: str) -> int:
    # ~4 characters a token for English text; close enough to keep a budget, and never zero.
    return max(1, len(text) // 4)


def history_for_model(*, conversation_id, before_seq: int) -> list[dict[str, str]]:
    """The latest complete user and assistant messages that fit the token budget, oldest first."""
    budget = getattr(settings, "CADENCE_CHAT_HISTORY_TOKENS", 6000)
    picked: list[dict[str, str]] = []
    rows = (
        Message.objects.filter(
            conversation_id=conversation_id,
            seq__lt=before_seq,
            role__in=[Message.Role.USER, Message.Role.ASSISTANT],
        )
        .exclude(status=Message.Status.FAILED)
        .exclude(content="")
        .order_by("-seq")
        .values_list("role", "content")
        .iterator(chunk_size=50)
    )
    for role, content in rows:
        cost = _estimate_tokens(content)
        if cost > budget:
            break
        budget -= cost
        picked.append({"role": role, "content": content})
    picked.reverse()
    return picked
