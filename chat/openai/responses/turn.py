"""One response: the turn pipeline in its own task (outliving its client), delivered through a
queue the HTTP response reads, and stored (when `store`) inside the run's own transaction."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from cadence_site.errors import ApplicationError
from chat.openai.access import Caller
from chat.openai.responses.items import arguments_text
from chat.openai.responses.validation import ResponsesRequest
from chat.openai.turn import _error_payload
from engine.runs import pipeline
from orchestrators.pool import Acquired
from orchestrators.runtime import RuntimeEvent, TokenEvent

logger = logging.getLogger(__name__)

# Cadence finish reasons → a response's status and incomplete_details.reason.
INCOMPLETE = {"length": "max_output_tokens", "max_steps": None}


@dataclass
class Final:
    body: dict[str, Any]  # the response object
    error: dict[str, Any] | None = None  # OpenAI's error object, when the turn failed
    http_status: int = 200


@dataclass
class ResponseTurn:
    caller: Caller
    request: ResponsesRequest
    acquired: Acquired
    run_id: str
    created: int
    message: str  # the user's new message; "" when the input ends with tool results
    history: list[dict[str, Any]]  # chat format, instructions first
    conversation_id: str | None = None  # set when stored
    message_id: str | None = None  # the stored reply's placeholder
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    outcome: asyncio.Future | None = None
    final: Final | None = None

    @property
    def hex(self) -> str:
        return uuid.UUID(self.run_id).hex

    @property
    def response_id(self) -> str:
        return f"resp_{self.hex}"

    @property
    def message_item_id(self) -> str:
        return f"msg_{self.hex}"

    def call_item_id(self, index: int) -> str:
        return f"fc_{self.hex}{index:04d}"

    def body(self, **fields: Any) -> dict[str, Any]:
        """The response object, with the request's echoed fields; `fields` override."""
        request = self.request
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created,
            "status": "in_progress",
            "background": False,
            "error": None,
            "incomplete_details": None,
            "model": self.acquired.slug,
            "output": [],
            "previous_response_id": request.previous_public_id,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "truncation": "disabled",
            "usage": None,
            **request.echo,
            **fields,
        }


def usage_output(usage: dict[str, int]) -> dict[str, Any] | None:
    if not usage:
        return None
    return {
        "input_tokens": usage.get("prompt_tokens", 0),
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.get("completion_tokens", 0),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.get("total_tokens", 0),
    }


def message_item(turn: ResponseTurn, text: str, status: str) -> dict[str, Any]:
    return {
        "id": turn.message_item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [text_part(text)],
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(turn: ResponseTurn, index: int, call: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "id": turn.call_item_id(index),
        "type": "function_call",
        "call_id": call["id"],
        "name": call["name"],
        "arguments": arguments_text(call["arguments"]) if status == "completed" else "",
        "status": status,
    }


def final_of(turn: ResponseTurn, outcome: pipeline.TurnOutcome) -> Final:
    """The response object a pipeline outcome makes."""
    usage = usage_output(outcome.usage)
    if outcome.error is not None:
        error = _error_payload(outcome.error)
        body = turn.body(
            status="failed",
            error={"code": error["code"], "message": error["message"]},
            usage=usage,
        )
        return Final(body, error, outcome.error.status_code)
    incomplete = outcome.finish_reason in INCOMPLETE
    output = []
    if outcome.content or not outcome.client_tool_calls:
        output.append(
            message_item(turn, outcome.content, "incomplete" if incomplete else "completed")
        )
    output += [
        call_item(turn, i, call, "completed") for i, call in enumerate(outcome.client_tool_calls)
    ]
    return Final(
        turn.body(
            status="incomplete" if incomplete else "completed",
            incomplete_details={"reason": INCOMPLETE[outcome.finish_reason]}
            if incomplete
            else None,
            output=output,
            usage=usage,
        )
    )


def _stored_calls(outcome: pipeline.TurnOutcome) -> list[dict[str, Any]]:
    """The reply's tool calls as every chat trigger stores them (`id`, `name`, `arguments`, and
    the orchestrator's own calls' results), the client's marked `"client": true`: a follow-up's
    history needs those, the orchestrator's own stay internal."""
    client_ids = {call["id"] for call in outcome.client_tool_calls}
    stored = [call for call in outcome.tool_calls if call["id"] not in client_ids]
    return stored + [
        {"id": c["id"], "name": c["name"], "arguments": c["arguments"], "client": True}
        for c in outcome.client_tool_calls
    ]


async def _run(turn: ResponseTurn) -> None:
    """The whole turn, whatever the client does: the pipeline feeds the queue the response reads."""
    from chat.openai.responses.store import response_finish

    caller, request = turn.caller, turn.request
    streamed: list[str] = []

    async def on_event(event: RuntimeEvent) -> None:
        if isinstance(event, TokenEvent) and event.delta:
            streamed.append(event.delta)
            turn.queue.put_nowait(("token", event.delta))

    store = None
    if turn.message_id is not None:
        message_id = turn.message_id

        def store(outcome: pipeline.TurnOutcome) -> None:
            turn.final = final_of(turn, outcome)
            response_finish(
                response_id=turn.run_id,
                message_id=message_id,
                body=turn.final.body,
                content=outcome.content,
                usage=outcome.usage,
                error=outcome.error_text,
                tool_calls=_stored_calls(outcome),
                run_id=outcome.run_id if outcome.recorded else None,
                cancelled=outcome.status == "cancelled",
            )

    try:
        outcome = await pipeline.turn_run(
            pipeline.TurnRequest(
                schema_name=caller.schema_name,
                org_slug=caller.org_slug,
                ref=turn.acquired.instance_id,
                message=turn.message,
                history=turn.history,
                trigger="openai",
                principal=caller.principal,
                conversation_id=turn.conversation_id,
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
        if turn.final is None:
            turn.final = final_of(turn, outcome)
        if outcome.error is None:
            # What the final reply adds to what streamed (a step-limit notice is never streamed).
            text = "".join(streamed)
            if outcome.content.startswith(text) and outcome.content != text:
                turn.queue.put_nowait(("token", outcome.content[len(text) :]))
    except ApplicationError as exc:  # not expected: turn_run maps every failure itself
        error = _error_payload(exc)
        turn.final = Final(
            turn.body(status="failed", error={"code": error["code"], "message": error["message"]}),
            error,
            exc.status_code,
        )
    finally:
        if turn.final is None:  # cancelled before the pipeline could answer
            turn.final = Final(
                turn.body(status="failed", error={"code": "server_error", "message": "cancelled"}),
                {"message": "cancelled", "type": "api_error", "param": None, "code": "cancelled"},
                503,
            )
        turn.queue.put_nowait(("done", turn.final))
        if turn.outcome is not None and not turn.outcome.done():
            turn.outcome.set_result(turn.final)


def launch(turn: ResponseTurn) -> None:
    """Start the turn on the running loop, outliving the request (see pipeline.turn_launch)."""
    turn.outcome = asyncio.get_running_loop().create_future()
    pipeline.turn_launch(_run(turn))
