"""`POST /v1/responses` (JSON or server-sent events) and `GET /v1/responses/<id>`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from cadence_site.errors import ApplicationError, NotFoundError
from chat.openai.access import _authorize
from chat.openai.errors import BadRequest, _error_type, openai_error
from chat.openai.responses import store
from chat.openai.responses.items import check_outputs
from chat.openai.responses.turn import (
    Final,
    ResponseTurn,
    call_item,
    launch,
    message_item,
    text_part,
)
from chat.openai.responses.validation import (
    RESPONSE_ID,
    ResponsesRequest,
    parse_responses_request,
)
from chat.openai.views import (
    keepalive_seconds,
    method_not_allowed,
    public_error,
    turn_request,
)
from tenants.context import in_tenant

logger = logging.getLogger(__name__)


def _not_found(public_id: str, *, previous: bool) -> JsonResponse:
    if previous:
        return openai_error(
            404,
            f"Previous response with id '{public_id}' not found.",
            code="previous_response_not_found",
            param="previous_response_id",
        )
    return openai_error(
        404, f"Response with id '{public_id}' not found.", code="response_not_found"
    )


def _context(*, response_id: str, key_id: str) -> list[dict[str, Any]]:
    record = store.stored_response_get(response_id=response_id, key_id=key_id)
    store.previous_check(record=record)
    return store.response_history(record=record)


async def _history(caller, parsed: ResponsesRequest) -> list[dict[str, Any]] | JsonResponse:
    """The stored context the request continues (empty without previous_response_id)."""
    if parsed.previous_public_id is None:
        return []
    try:
        return await in_tenant(
            caller.schema_name,
            _context,
            response_id=parsed.previous_response_id,
            key_id=caller.key_id,
        )
    except NotFoundError:
        return _not_found(parsed.previous_public_id, previous=True)
    except ApplicationError as exc:
        return openai_error(
            exc.status_code, exc.message, code=exc.code, param="previous_response_id"
        )


@csrf_exempt
async def responses(request: HttpRequest) -> HttpResponse:
    prepared = await turn_request(request, parse_responses_request)
    if isinstance(prepared, HttpResponse):
        return prepared
    caller, parsed, acquired = prepared
    stored = await _history(caller, parsed)
    if isinstance(stored, HttpResponse):
        return stored
    try:
        check_outputs(stored, parsed.items)
    except BadRequest as exc:
        return openai_error(400, exc.message, code=exc.code, param=exc.param)

    items = parsed.items
    history = [{"role": "system", "content": parsed.instructions}] if parsed.instructions else []
    history += stored + (items if parsed.continues_tools else items[:-1])
    turn = ResponseTurn(
        caller=caller,
        request=parsed,
        acquired=acquired,
        run_id=str(uuid.uuid4()),
        created=int(time.time()),
        message="" if parsed.continues_tools else items[-1]["content"],
        history=history,
    )
    if parsed.store:
        try:
            turn.conversation_id, turn.message_id = await in_tenant(
                caller.schema_name,
                _begin,
                turn=turn,
            )
        except ApplicationError as exc:
            return openai_error(
                exc.status_code, exc.message, code=exc.code, type=_error_type(exc.status_code)
            )
    launch(turn)
    if parsed.stream:
        response = StreamingHttpResponse(_event_stream(turn), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response

    assert turn.outcome is not None
    # Shielded: a client that leaves cancels this view, not the turn.
    final: Final = await asyncio.shield(turn.outcome)
    if final.error is not None:
        return JsonResponse({"error": public_error(final.error)}, status=final.http_status)
    return JsonResponse(final.body)


def _begin(*, turn: ResponseTurn) -> tuple[str, str]:
    """In the tenant's schema: the input items and the reply's placeholder, stored first."""
    return store.response_begin(
        response_id=turn.run_id,
        key_id=turn.caller.key_id,
        instance_id=turn.acquired.instance_id,
        previous_id=turn.request.previous_response_id,
        items=turn.request.items,
        body=turn.body(),
    )


def _stored_body(*, response_id: str, key_id: str) -> dict[str, Any]:
    return store.stored_response_get(response_id=response_id, key_id=key_id).body


@csrf_exempt
async def response_detail(request: HttpRequest, response_id: str) -> HttpResponse:
    if request.method != "GET":
        return method_not_allowed(request, "GET")
    caller = await _authorize(request)
    if isinstance(caller, HttpResponse):
        return caller
    match = RESPONSE_ID.match(response_id)
    if match is None:
        return _not_found(response_id[:100], previous=False)
    try:
        body = await in_tenant(
            caller.schema_name, _stored_body, response_id=match.group(1), key_id=caller.key_id
        )
    except NotFoundError:
        return _not_found(response_id, previous=False)
    return JsonResponse(body)


# --- streaming ------------------------------------------------------------------------------


class _Events:
    """Server-sent events with OpenAI's `event:` names and a growing `sequence_number`."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def _event_stream(turn: ResponseTurn) -> AsyncIterator[str]:
    """Reads the turn's queue; closing this generator (the client left) leaves the turn running."""
    event = _Events()
    yield event("response.created", response=turn.body())
    yield event("response.in_progress", response=turn.body())
    item_id = turn.message_item_id
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    started = False

    def start() -> list[str]:
        return [
            event(
                "response.output_item.added",
                output_index=0,
                item=message_item(turn, "", "in_progress") | {"content": []},
            ),
            event("response.content_part.added", **where, part=text_part("")),
        ]

    keepalive = keepalive_seconds()
    while True:
        items: list[tuple[str, Any]] = []
        if turn.queue.empty():
            try:
                items.append(await asyncio.wait_for(turn.queue.get(), timeout=keepalive))
            except TimeoutError:
                yield ": ping\n\n"
                continue
        while not turn.queue.empty():
            items.append(turn.queue.get_nowait())
        delta = "".join(value for kind, value in items if kind == "token")
        if delta:
            if not started:
                started = True
                for line in start():
                    yield line
            yield event("response.output_text.delta", **where, delta=delta, logprobs=[])
        final: Final | None = next((value for kind, value in items if kind == "done"), None)
        if final is None:
            continue
        body = final.body
        if final.error is not None:
            yield event("response.failed", response=body)
            return
        output = body["output"]
        index = 0
        if output and output[0]["type"] == "message":
            if not started:
                for line in start():
                    yield line
            message = output[0]
            done = message["content"][0]["text"]
            yield event("response.output_text.done", **where, text=done, logprobs=[])
            yield event("response.content_part.done", **where, part=text_part(done))
            yield event("response.output_item.done", output_index=0, item=message)
            index = 1
        for position, item in enumerate(output[index:], start=index):
            call = {"id": item["call_id"], "name": item["name"], "arguments": item["arguments"]}
            call_index = position - index
            yield event(
                "response.output_item.added",
                output_index=position,
                item=call_item(turn, call_index, call, "in_progress"),
            )
            yield event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=position,
                delta=item["arguments"],
            )
            yield event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=position,
                name=item["name"],
                arguments=item["arguments"],
            )
            yield event("response.output_item.done", output_index=position, item=item)
        kind = "response.incomplete" if body["status"] == "incomplete" else "response.completed"
        yield event(kind, response=body)
        return
