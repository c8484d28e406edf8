"""Conversations and messages: sequence numbers, ownership, the history a model sees.

Synchronous functions that expect to run inside the organization's schema (callers from async
code go through tenants.context.in_tenant).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from cadence_site.errors import ApplicationError, NotFoundError
from cadence_site.prepared import bound_cursor
from cadence_site.rows import rows_insert
from chat.models import Conversation, Message
from orchestrators.models import OrchestratorInstance
from tenants.teams.scoping import TeamScope, require_level, scoped

MAX_CONTENT = 32_000


def owner_fields(principal) -> dict[str, Any]:
    key = getattr(principal, "api_key", None)
    return {"owner_api_key_id": key.pk} if key is not None else {"owner_user_id": principal.pk}


def conversation_list(*, principal, scope: TeamScope):
    """The caller's own conversations whose team they may still see (tenants/teams/scoping.py):
    a member who leaves a team stops seeing the conversations held with its orchestrators."""
    mine = Conversation.objects.filter(**owner_fields(principal))
    return scoped(mine, scope, shared_field="orchestrator_id").select_related("orchestrator")


def conversation_get(*, principal, scope: TeamScope, conversation_id) -> Conversation:
    """The caller's own conversation; another member's or organization's, or one of a team the
    caller no longer sees, is the same 404."""
    conversation = (
        conversation_list(principal=principal, scope=scope).filter(pk=conversation_id).first()
    )
    if conversation is None:
        raise NotFoundError("No such conversation.", "conversation_not_found")
    return conversation


def conversation_for_turn(*, principal, scope: TeamScope, conversation_id) -> Conversation:
    """The caller's conversation, if they may still use its orchestrator (a share narrowed to
    read leaves the conversation readable, not writable)."""
    conversation = conversation_get(
        principal=principal, scope=scope, conversation_id=conversation_id
    )
    require_level(
        scope, kind="orchestrator", obj=conversation.orchestrator, level="use", what="orchestrator"
    )
    return conversation


def conversation_create(
    *,
    principal,
    scope: TeamScope,
    orchestrator_ref,
    title: str = "",
    metadata: dict | None = None,
) -> Conversation:
    qs = scoped(OrchestratorInstance.objects.all(), scope)
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
    require_level(scope, kind="orchestrator", obj=instance, level="use", what="orchestrator")
    if instance.status == OrchestratorInstance.Status.SUSPENDED:
        raise ApplicationError(
            "This orchestrator is suspended.",
            "orchestrator_suspended",
            {"field": "orchestrator"},
            status=409,
        )
    return Conversation.objects.create(
        orchestrator=instance,
        team_id=instance.team_id,
        title=title[:200],
        metadata=metadata or {},
        **owner_fields(principal),
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
    with bound_cursor() as cursor:  # prepared
        cursor.execute(
            f"UPDATE {table} SET last_seq = last_seq + %s WHERE id = %s RETURNING last_seq",  # noqa: S608 - fixed names
            [count, pk],
        )
        row = cursor.fetchone()
    if row is None:
        raise NotFoundError("No such conversation.", "conversation_not_found")
    return row[0]


def messages_append(
    *,
    conversation_id,
    messages: list[dict[str, Any]],
    check: Callable[[], None] | None = None,
) -> list[Message]:
    """Appends messages (each `message_append`'s keyword arguments but the conversation) with
    consecutive sequence numbers, in one transaction and one INSERT (no savepoint inside a
    caller's transaction: a failure rolls that back). `check` runs once the conversation's row
    is locked (by taking the numbers), before the INSERT; what it raises undoes the numbers."""
    with transaction.atomic(savepoint=False):
        last = _next_seqs(conversation_id=conversation_id, count=len(messages))
        if check is not None:
            check()
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
                tool_call_id=spec.get("tool_call_id", ""),
            )
            for index, spec in enumerate(messages)
        ]
        return rows_insert(rows)


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
    tool_call_id: str = "",
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
                "tool_call_id": tool_call_id,
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
    """The latest complete user and assistant messages that fit the token budget, oldest first.

    Read newest first, a page at a time, each page twice the last (one statement for most
    conversations, a few for the longest; a server-side cursor cost four round trips for the
    same rows). The statement is written once (_HISTORY_SQL): built by the ORM, it cost more CPU
    than the rest of a chat turn's begin."""
    budget = getattr(settings, "CADENCE_CHAT_HISTORY_TOKENS", 6000)
    picked: list[dict[str, str]] = []
    pk = Conversation._meta.pk.to_python(conversation_id)  # a bad id fails as the ORM's would
    page, below = 50, before_seq
    while True:
        with bound_cursor() as cursor:  # prepared
            batch = cursor.execute(_HISTORY_SQL, [pk, below, page]).fetchall()
        for seq, role, content in batch:
            cost = _estimate_tokens(content)
            if cost > budget:
                picked.reverse()
                return picked
            budget -= cost
            picked.append({"role": role, "content": content})
            below = seq
        if len(batch) < page:
            break
        page = min(page * 2, 1000)
    picked.reverse()
    return picked


_HISTORY_SQL = (
    f"SELECT seq, role, content FROM {Message._meta.db_table}"  # noqa: S608 - fixed names
    " WHERE conversation_id = %s AND seq < %s"
    f" AND role IN ('{Message.Role.USER.value}', '{Message.Role.ASSISTANT.value}')"
    f" AND status <> '{Message.Status.FAILED.value}' AND content <> ''"
    " ORDER BY seq DESC LIMIT %s"
)
