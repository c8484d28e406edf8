"""Chat's side of orphan recovery (issue 8): a reply whose process is gone.

A reply's placeholder is written with its owner (engine/runs/owners.py) and a heartbeat
(`reply_begin`); `ReplyHeartbeat`, a turn extension, stores the text so far with a new heartbeat
every PROGRESS_SECONDS (one UPDATE, never one per token) and links the reply to its run once the
run's row exists. A reply whose owner is gone is ended by `replies_orphaned_finish`: `failed`
with the error code `interrupted`, or `cancelled` when a cancel was asked, its text kept, its
run ended with the same status. It runs from the sweep (engine/runs/orphans.py registers it as a
source), when a new message finds the conversation still busy (`reply_begin`: the conversation
is usable again at once), and when a cancel finds the reply orphaned (`reply_cancel_request`).
"""

from __future__ import annotations

import json
import logging
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import schema_context

from cadence_site.loops import LoopLocal
from cadence_site.prepared import bound_cursor
from chat.models import Message
from engine.models import Run
from engine.runs import pipeline
from engine.runs.orphans import (
    INTERRUPTED,
    INTERRUPTED_MESSAGE,
    BeatGatherer,
    Source,
    Verdict,
    runs_end,
    verdict_for,
)
from engine.runs.owners import owner_token

logger = logging.getLogger(__name__)

INTERRUPTED_ERROR = f"{INTERRUPTED}: {INTERRUPTED_MESSAGE}"


def replies_orphaned_finish(verdict: Verdict, *, conversation_id=None) -> list[dict]:
    """In the tenant's schema: claim the streaming replies whose owner is gone (one conditional
    UPDATE … RETURNING: a reply another sweeper or the live owner ended is not touched) and end
    their runs the same way; the replies it ended, as {id, conversation, run, status, seq,
    content, run_ended}."""
    table = connection.ops.quote_name(Message._meta.db_table)
    scope, params = "", []
    if conversation_id is not None:
        scope, params = " AND conversation_id = %s", [str(conversation_id)]
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET "  # noqa: S608 - fixed names
            "status = CASE WHEN cancel_requested_at IS NULL THEN %s ELSE %s END, "
            "error = CASE WHEN cancel_requested_at IS NULL THEN %s ELSE '' END, updated_at = %s "
            "WHERE status = %s AND (COALESCE(heartbeat_at, updated_at) < %s OR owner = ANY(%s))"
            f"{scope} RETURNING id, conversation_id, run_id, status, seq, content",
            [
                Message.Status.FAILED,
                Message.Status.CANCELLED,
                INTERRUPTED_ERROR,
                now,
                Message.Status.STREAMING,
                verdict.stale_before,
                list(verdict.gone),
                *params,
            ],
        )
        ended = [
            {
                "id": str(m),
                "conversation": str(c),
                "run": str(r) if r else None,
                "status": s,
                "seq": seq,
                "content": content,
            }
            for m, c, r, s, seq, content in cursor.fetchall()
        ]
        if ended:
            _end_runs(ended)
    if ended:
        logger.warning(
            "replies whose process is gone were ended",
            extra={"schema": connection.schema_name, "count": len(ended)},
        )
        schema_name = connection.schema_name
        transaction.on_commit(partial(_announce, schema_name, ended))
    return ended


def replies_sweep(verdict: Verdict) -> int:
    """The sweep's part for replies: how many replies and runs it ended."""
    ended = replies_orphaned_finish(verdict)
    return len(ended) + sum(1 for e in ended if e["run_ended"])


def _end_runs(ended: list[dict]) -> None:
    """The replies' runs, ended as their replies were: the run the heartbeat linked, else the
    conversation's running run (the process died before the first heartbeat linked it)."""
    unlinked = {e["conversation"]: e for e in ended if e["run"] is None}
    if unlinked:
        for run_id, conversation_id in (
            Run.objects.filter(conversation_id__in=list(unlinked), status=Run.Status.RUNNING)
            .exclude(trigger=Run.Trigger.QUEUE)
            .values_list("pk", "conversation_id")
        ):
            reply = unlinked[str(conversation_id)]
            reply["run"] = str(run_id)
            Message.objects.filter(pk=reply["id"], run_id__isnull=True).update(run_id=run_id)
    finished: set[str] = set()
    for status in (Message.Status.CANCELLED, Message.Status.FAILED):
        run_ids = [e["run"] for e in ended if e["run"] and e["status"] == status]
        finished.update(runs_end(run_ids=run_ids, status=status))
    for reply in ended:
        reply["run_ended"] = reply["run"] in finished


def _announce(schema_name: str, ended: list[dict]) -> None:
    """Tell open tabs (which read the conversation's Redis stream) that the reply ended; best
    effort: a tab that misses it sees the stored reply when it fetches the messages."""
    from cadence_site.aredis import sync_redis
    from chat.turns import STREAM_MAXLEN, STREAM_TTL, stream_key

    try:
        client = sync_redis(settings.REDIS_URL, 2)
        for reply in ended:
            frame = {
                "type": "done",
                "message_id": reply["id"],
                "seq": reply["seq"],
                "status": reply["status"],
                "content": reply["content"],
                "usage": {},
                "run": reply["run"],
                "tool_calls": [],
                "error": INTERRUPTED_ERROR if reply["status"] == Message.Status.FAILED else "",
            }
            key = stream_key(schema_name, reply["conversation"])
            client.xadd(key, {"e": json.dumps(frame)}, maxlen=STREAM_MAXLEN, approximate=True)
            client.expire(key, STREAM_TTL)
    except Exception as exc:
        logger.warning("orphaned reply not announced", extra={"error": type(exc).__name__})


def reply_cancel_request(*, conversation_id, message_id) -> bool:
    """In the tenant's schema: record that a cancel was asked (a reply whose owner dies later ends
    `cancelled`), and end the reply at once if its owner is gone already; whether it did."""
    with transaction.atomic():
        owner = (
            Message.objects.filter(
                pk=message_id, conversation_id=conversation_id, status=Message.Status.STREAMING
            )
            .values_list("owner", flat=True)
            .first()
        )
        if owner is None:
            return False
        Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
            cancel_requested_at=timezone.now()
        )
        ended = replies_orphaned_finish(verdict_for([owner]), conversation_id=conversation_id)
    return any(e["id"] == str(message_id) for e in ended)


_STREAMING_OWNERS_SQL = (
    f"SELECT owner FROM {Message._meta.db_table}"  # noqa: S608 - fixed names
    f" WHERE conversation_id = %s AND status = '{Message.Status.STREAMING.value}'"
)


def conversation_free(*, conversation_id) -> bool:
    """In the tenant's schema: whether the conversation can take a new turn, after ending a
    reply it still shows as streaming if that reply's owner is gone."""
    # On every turn's begin: one statement, no query building, prepared (cadence_site/prepared).
    with bound_cursor() as cursor:
        cursor.execute(
            _STREAMING_OWNERS_SQL,
            [Message._meta.get_field("conversation").to_python(conversation_id)],
        )
        owners = [owner for (owner,) in cursor.fetchall()]
    if not owners:
        return True
    replies_orphaned_finish(verdict_for(owners), conversation_id=conversation_id)
    return not Message.objects.filter(
        conversation_id=conversation_id, status=Message.Status.STREAMING
    ).exists()


# --- the heartbeat --------------------------------------------------------------------------------


def _replies_beat(*, beats: dict[tuple[str, str, str], tuple[str | None, str]]) -> None:
    """Each streaming reply's heartbeat and text so far, one UPDATE per schema for all the
    replies gathered ({(schema, conversation id, owner): (run id, text)}). The run's row is
    written beside the first model call: a reply is linked to it once it exists."""
    by_schema: dict[str, list[tuple]] = {}
    for (schema_name, conversation_id, owner), (run_id, text) in beats.items():
        by_schema.setdefault(schema_name, []).append((conversation_id, owner, run_id, text))
    now = timezone.now()
    for schema_name, rows in by_schema.items():
        values = ", ".join(["(%s::uuid, %s, %s::uuid, %s)"] * len(rows))
        params: list = [now]
        for row in rows:
            params += row
        params.append(Message.Status.STREAMING)
        with schema_context(schema_name), connection.cursor() as cursor:
            cursor.execute(_REPLIES_BEAT_SQL.format(values=values), params)


_REPLIES_BEAT_SQL = (
    f"UPDATE {Message._meta.db_table} AS m SET content = beat.content, heartbeat_at = %s,"  # noqa: S608 - fixed names
    f" run_id = COALESCE(m.run_id, (SELECT r.id FROM {Run._meta.db_table} r WHERE r.id = beat.run))"
    " FROM (VALUES {values}) AS beat (conversation, owner, run, content)"
    " WHERE m.conversation_id = beat.conversation AND m.owner = beat.owner AND m.status = %s"
)
_loop_reply_beats: LoopLocal[BeatGatherer] = LoopLocal(lambda: BeatGatherer(_replies_beat))


class ReplyHeartbeat(pipeline.TurnExtension):
    """The reply so far and its owner's heartbeat, for a turn that writes a chat reply: the
    replies of one event loop that beat within BEAT_GATHER_SECONDS of each other are written
    with one statement (engine/runs/orphans.BeatGatherer), not one thread hop and UPDATE each."""

    async def on_progress(self, turn) -> None:
        request = turn.request
        if not request.conversation_id or request.trigger == Run.Trigger.QUEUE:
            return
        if turn.finishing:  # reply_store, next, writes the reply and links the run
            return
        await _loop_reply_beats.get().beat(
            (request.schema_name, request.conversation_id, owner_token()),
            (turn.run_id, "".join(turn.text)),
        )


reply_heartbeat = ReplyHeartbeat()

REPLIES = Source(
    model=Message,
    status=Message.Status.STREAMING,
    since="updated_at",
    finish=replies_sweep,
    name="chat.replies",
)
