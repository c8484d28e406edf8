"""One completion: the turn pipeline in its own task (outliving its client), delivered through a
queue the response reads; stored in a conversation when the request asks."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from cadence_site.errors import ApplicationError
from chat.openai import FINISH_REASONS
from chat.openai.access import Caller
from chat.openai.errors import _application_error_payload
from chat.openai.validation import CompletionRequest
from engine.runs import pipeline
from orchestrators.pool import Acquired
from orchestrators.runtime import RuntimeEvent, TokenEvent
from tenants.context import in_tenant_green

logger = logging.getLogger(__name__)

# --- the turn -------------------------------------------------------------------------------


@dataclass
class CompletionOutcome:
    status: str  # a Run status: succeeded, failed, cancelled
    content: str = ""
    finish_reason: str = "stop"
    usage: dict[str, int] = field(default_factory=dict)
    error: dict[str, Any] | None = None  # OpenAI's error object
    http_status: int = 200
    user_message_id: str | None = None
    assistant_message_id: str | None = None
    # Calls of the client's tools (finish_reason "tool_calls"), in OpenAI's shape.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Turn:
    caller: Caller
    request: CompletionRequest
    acquired: Acquired
    run_id: str
    created: int
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    outcome: asyncio.Future | None = None

    @property
    def slug(self) -> str:
        return self.acquired.slug

    @property
    def completion_id(self) -> str:
        return f"chatcmpl-{uuid.UUID(self.run_id).hex}"


def _conversation_exists(*, conversation_id: str, key_id: str, instance_id: str) -> bool:
    from chat.models import Conversation

    return Conversation.objects.filter(
        pk=conversation_id, owner_api_key_id=key_id, orchestrator_id=instance_id
    ).exists()


def _begin(*, conversation_id: str, content: str) -> tuple[str, str]:
    from chat.turns import reply_begin

    user, assistant = reply_begin(conversation_id=conversation_id, content=content)
    return str(user.id), str(assistant.id)


def _error_payload(error: ApplicationError) -> dict[str, Any]:
    if error.code == "turn_failed":
        return {
            "message": error.message,
            "type": "api_error",
            "param": None,
            "code": "server_error",
        }
    return _application_error_payload(error)


async def _run(turn: Turn) -> None:
    """The whole turn, whatever the client does: the pipeline feeds the queue the response reads."""
    from chat.turns import reply_store

    caller, request = turn.caller, turn.request
    result = CompletionOutcome(status="succeeded")
    streamed: list[str] = []

    async def on_event(event: RuntimeEvent) -> None:
        if isinstance(event, TokenEvent) and event.delta:
            streamed.append(event.delta)
            turn.queue.put_nowait(("token", event.delta))

    store = None
    try:
        if request.conversation_id is not None:
            # The user's message is stored before the model runs.
            result.user_message_id, result.assistant_message_id = await in_tenant_green(
                caller.schema_name,
                _begin,
                conversation_id=request.conversation_id,
                content=request.message,
            )
            message_id = result.assistant_message_id

            def store(outcome: pipeline.TurnOutcome) -> None:
                reply_store(message_id=message_id, outcome=outcome)

        outcome = await pipeline.turn_run(
            pipeline.TurnRequest(
                schema_name=caller.schema_name,
                org_slug=caller.org_slug,
                ref=turn.acquired.instance_id,
                message=request.message,
                history=request.history,
                trigger="openai",
                principal=caller.principal,
                conversation_id=request.conversation_id,
                run_id=turn.run_id,
                acquired=turn.acquired,
                parameters=dict(request.parameters),
                client_tools=list(request.tools),
                owner_api_key_id=str(caller.key_id),
                org_id=caller.org_id,
                key_id=str(caller.key_id),
            ),
            on_event=on_event,
            store=store,
        )
        result.status, result.content = outcome.status, outcome.content
        result.usage = outcome.usage
        result.finish_reason = FINISH_REASONS.get(outcome.finish_reason, "stop")
        result.tool_calls = [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
            }
            for call in outcome.client_tool_calls
        ]
        if outcome.error is not None:
            result.error, result.http_status = (
                _error_payload(outcome.error),
                outcome.error.status_code,
            )
        else:
            # What the final reply adds to what streamed (a step-limit notice is never streamed).
            text = "".join(streamed)
            if outcome.content.startswith(text) and outcome.content != text:
                turn.queue.put_nowait(("token", outcome.content[len(text) :]))
            elif not text and outcome.content:
                turn.queue.put_nowait(("token", outcome.content))
    except ApplicationError as exc:  # the conversation could not take a turn now
        result.status = "failed"
        result.error, result.http_status = _error_payload(exc), exc.status_code
    finally:
        turn.queue.put_nowait(("done", result))
        if turn.outcome is not None and not turn.outcome.done():
            turn.outcome.set_result(result)


def _launch(turn: Turn) -> None:
    """Start the turn on the running loop, outliving the request (see pipeline.turn_launch)."""
    turn.outcome = asyncio.get_running_loop().create_future()
    pipeline.turn_launch(_run(turn))
