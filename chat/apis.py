from __future__ import annotations

import asyncio
import json

from asgiref.sync import async_to_sync
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import renderers, serializers
from rest_framework.response import Response

from cadence_site.api import OrgMemberApi, StrictSerializer
from cadence_site.openapi import results_of
from chat import services, turns
from chat.models import Conversation, Message
from tenants.roles import Role

PAGE_SIZE = 100


def conversation_output(conversation: Conversation) -> dict:
    return {
        "id": str(conversation.id),
        "orchestrator": str(conversation.orchestrator_id),
        "orchestrator_slug": conversation.orchestrator.slug,
        "title": conversation.title,
        "metadata": conversation.metadata,
        "last_seq": conversation.last_seq,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
    }


# --- response bodies (the schema; the functions that build them are what the views send) ------


class ConversationOutput(serializers.Serializer):
    id = serializers.UUIDField()
    orchestrator = serializers.UUIDField()
    orchestrator_slug = serializers.CharField()
    title = serializers.CharField(allow_blank=True)
    metadata = serializers.JSONField()
    last_seq = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class MessageOutput(serializers.Serializer):
    id = serializers.UUIDField()
    conversation = serializers.UUIDField()
    seq = serializers.IntegerField()
    role = serializers.ChoiceField(choices=Message.Role.choices)
    content = serializers.CharField(allow_blank=True)
    tool_calls = serializers.ListField(child=serializers.DictField())
    status = serializers.ChoiceField(choices=Message.Status.choices)
    usage = serializers.DictField()
    error = serializers.CharField(allow_blank=True)
    run = serializers.UUIDField(allow_null=True)
    created_at = serializers.DateTimeField()


class MessagePageOutput(serializers.Serializer):
    results = MessageOutput(many=True)
    next_after = serializers.IntegerField(
        allow_null=True, help_text="Pass as `after` for the next page; null on the last one."
    )


class ReplyOutput(serializers.Serializer):
    type = serializers.ChoiceField(choices=["done"])
    message_id = serializers.UUIDField()
    seq = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Message.Status.choices)
    content = serializers.CharField(allow_blank=True)
    usage = serializers.DictField()
    run = serializers.UUIDField(allow_null=True)
    tool_calls = serializers.ListField(child=serializers.DictField())
    error = serializers.CharField(allow_blank=True)


class MessagePostedOutput(serializers.Serializer):
    user_message = MessageOutput()
    reply = ReplyOutput()


class CancelOutput(serializers.Serializer):
    cancelled = serializers.BooleanField(help_text="Whether a reply was being written.")


class ConversationListApi(OrgMemberApi):
    required_role = Role.MEMBER

    class InputSerializer(StrictSerializer):
        orchestrator = serializers.CharField(max_length=100)
        title = serializers.CharField(max_length=200, required=False, allow_blank=True)
        metadata = serializers.JSONField(required=False)

    @extend_schema(
        summary="Your conversations, newest first (at most 200)",
        responses={200: results_of(ConversationOutput)},
    )
    def get(self, request, org_slug):
        return Response(
            {
                "results": [
                    conversation_output(c)
                    for c in services.conversation_list(
                        principal=request.user, scope=self.scope(request)
                    )[:200]
                ]
            }
        )

    @extend_schema(
        summary="Start a conversation with an orchestrator",
        description="`orchestrator` is the orchestrator's slug or UUID.",
        request=InputSerializer,
        responses={201: ConversationOutput},
    )
    def post(self, request, org_slug):
        data = self.validated(self.InputSerializer, request.data)
        conversation = services.conversation_create(
            principal=request.user,
            scope=self.scope(request),
            orchestrator_ref=data["orchestrator"],
            title=data.get("title", ""),
            metadata=data.get("metadata"),
        )
        return Response(conversation_output(conversation), status=201)


class ConversationDetailApi(OrgMemberApi):
    required_role = Role.MEMBER

    class InputSerializer(StrictSerializer):
        title = serializers.CharField(max_length=200, required=False, allow_blank=True)
        metadata = serializers.JSONField(required=False)

    @extend_schema(summary="One of your conversations", responses={200: ConversationOutput})
    def get(self, request, org_slug, conversation_id):
        return Response(
            conversation_output(
                services.conversation_get(
                    principal=request.user,
                    scope=self.scope(request),
                    conversation_id=conversation_id,
                )
            )
        )

    @extend_schema(
        summary="Rename a conversation or change its metadata",
        request=InputSerializer,
        responses={200: ConversationOutput},
    )
    def patch(self, request, org_slug, conversation_id):
        data = self.validated(self.InputSerializer, request.data)
        conversation = services.conversation_get(
            principal=request.user, scope=self.scope(request), conversation_id=conversation_id
        )
        return Response(
            conversation_output(services.conversation_update(conversation=conversation, **data))
        )

    @extend_schema(summary="Delete a conversation and its messages", responses={204: None})
    def delete(self, request, org_slug, conversation_id):
        services.conversation_delete(
            conversation=services.conversation_get(
                principal=request.user, scope=self.scope(request), conversation_id=conversation_id
            )
        )
        return Response(status=204)


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


async def _sse_stream(start: turns.TurnStart):
    """The turn runs in its own task; this only relays it, so a client that leaves stops nothing."""
    turn = turns.turn_launch(start)
    queue = turn.subscribe()
    while True:
        try:
            event = await asyncio.wait_for(queue.get(), timeout=15)
        except TimeoutError:
            yield ": ping\n\n"
            continue
        kind = event["type"]
        yield _sse("done" if kind == "done" else kind, event)
        if kind == "done":
            return


async def _run_to_completion(start: turns.TurnStart) -> dict:
    turn = turns.turn_launch(start)
    await turn.done.wait()
    return turn.result


class EventStreamRenderer(renderers.BaseRenderer):
    """Lets `Accept: text/event-stream` through content negotiation; the view streams itself, and
    errors are JSON responses that bypass renderers."""

    media_type = "text/event-stream"
    format = "sse"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return json.dumps(data, default=str).encode()


class MessageListApi(OrgMemberApi):
    """GET: messages oldest first, `?after=<seq>` for what a reconnecting client missed.
    POST: a user message; the reply as JSON, or as server-sent events with `Accept: text/event-stream`."""

    read_role = Role.MEMBER
    required_role = Role.MEMBER
    renderer_classes = [renderers.JSONRenderer, EventStreamRenderer]

    class InputSerializer(StrictSerializer):
        content = serializers.CharField(max_length=services.MAX_CONTENT, trim_whitespace=False)

    @extend_schema(
        summary="Messages, oldest first",
        parameters=[
            OpenApiParameter(
                "after",
                OpenApiTypes.INT,
                description="Only messages after this `seq` (what a reconnecting client missed).",
            ),
            OpenApiParameter(
                "limit", OpenApiTypes.INT, description=f"Page size, 1-{PAGE_SIZE} (default)."
            ),
        ],
        responses={200: MessagePageOutput},
    )
    def get(self, request, org_slug, conversation_id):
        conversation = services.conversation_get(
            principal=request.user, scope=self.scope(request), conversation_id=conversation_id
        )
        try:
            after = max(0, int(request.query_params.get("after", 0)))
            limit = min(PAGE_SIZE, max(1, int(request.query_params.get("limit", PAGE_SIZE))))
        except ValueError:
            from cadence_site.errors import ApplicationError

            raise ApplicationError("after and limit must be integers.", "invalid_cursor") from None
        items = services.messages_after(conversation=conversation, after=after, limit=limit)
        more = len(items) == limit and conversation.last_seq > items[-1].seq
        return Response(
            {
                "results": [turns.message_output(m) for m in items],
                "next_after": items[-1].seq if more else None,
            }
        )

    @extend_schema(
        summary="Send a message; the reply as JSON or server-sent events",
        description="The user's message is stored before the model runs. With `Accept: "
        "text/event-stream` the reply streams as events (`token`, `tool_call`, `tool_result`, "
        "`error`, then `done` with the stored reply); otherwise the answer waits for the reply "
        "(502 when it failed, with the same body).",
        request=InputSerializer,
        responses={
            (201, "application/json"): MessagePostedOutput,
            (200, "text/event-stream"): OpenApiTypes.STR,
            (502, "application/json"): MessagePostedOutput,
            409: None,
        },
    )
    def post(self, request, org_slug, conversation_id):
        data = self.validated(self.InputSerializer, request.data)
        conversation = services.conversation_for_turn(
            principal=request.user, scope=self.scope(request), conversation_id=conversation_id
        )
        start = turns.turn_begin(
            schema_name=request.org.schema_name,
            org_slug=request.org.slug,
            conversation=conversation,
            content=data["content"],
            principal=str(request.user),
            trigger="rest",
            org_id=request.org.id,
            key_id=str(request.user.api_key.pk) if hasattr(request.user, "api_key") else None,
        )
        if "text/event-stream" in request.headers.get("Accept", ""):
            response = StreamingHttpResponse(_sse_stream(start), content_type="text/event-stream")
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"
            return response
        result = async_to_sync(_run_to_completion)(start)
        status = 201 if result["status"] == "complete" else 502
        return Response({"user_message": start.user_message, "reply": result}, status=status)


class MessageCancelApi(OrgMemberApi):
    required_role = Role.MEMBER

    @extend_schema(
        summary="Stop the reply being written", request=None, responses={200: CancelOutput}
    )
    def post(self, request, org_slug, conversation_id):
        conversation = services.conversation_get(
            principal=request.user, scope=self.scope(request), conversation_id=conversation_id
        )
        streaming = (
            conversation.messages.filter(status="streaming").values_list("id", flat=True).first()
        )
        cancelled = async_to_sync(turns.reply_cancel)(
            schema_name=request.org.schema_name,
            conversation_id=str(conversation.id),
            message_id=str(streaming) if streaming else None,
        )
        return Response({"cancelled": bool(cancelled and streaming)})
