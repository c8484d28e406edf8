"""The /v1/ views: models, model detail, chat completions (JSON or server-sent events)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from cadence_site.errors import ApplicationError
from cadence_site.inputguard import InputError, json_loads
from chat.openai import DEFAULT_KEEPALIVE_SECONDS
from chat.openai.access import _authorize
from chat.openai.errors import BadRequest, _error_type, openai_error
from chat.openai.turn import CompletionOutcome, Turn, _conversation_exists, _launch
from chat.openai.validation import parse_completion_request
from orchestrators.pool import pool
from tenants.context import in_tenant
from tenants.roles import Role, role_at_least
from tenants.teams.scoping import TeamScope, scoped

logger = logging.getLogger(__name__)

# --- models ---------------------------------------------------------------------------------


def _ready_models(*, scope: TeamScope, slug: str | None = None) -> list[dict[str, Any]]:
    """The ready orchestrators the key may use: its team scope's (tenants/teams/scoping.py)."""
    from orchestrators.models import OrchestratorInstance

    qs = scoped(
        OrchestratorInstance.objects.filter(status=OrchestratorInstance.Status.READY),
        scope,
        level="use",
    )
    if slug is not None:
        qs = qs.filter(slug=slug)
    return list(qs.order_by("slug").values("slug", "created_at"))


def _model_usable(*, scope: TeamScope, ref: str) -> bool:
    from orchestrators.models import OrchestratorInstance

    try:
        lookup = {"pk": uuid.UUID(ref)}
    except ValueError:
        lookup = {"slug": ref}
    return scoped(OrchestratorInstance.objects.filter(**lookup), scope, level="use").exists()


def _model_output(row: dict[str, Any], org_slug: str) -> dict[str, Any]:
    return {
        "id": row["slug"],
        "object": "model",
        "created": int(row["created_at"].timestamp()),
        "owned_by": org_slug,
    }


@csrf_exempt
async def models_list(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return method_not_allowed(request, "GET")
    caller = await _authorize(request)
    if isinstance(caller, HttpResponse):
        return caller
    rows = await in_tenant(caller.schema_name, _ready_models, scope=caller.team_scope)
    return JsonResponse(
        {"object": "list", "data": [_model_output(row, caller.org_slug) for row in rows]}
    )


@csrf_exempt
async def model_detail(request: HttpRequest, model: str) -> HttpResponse:
    if request.method != "GET":
        return method_not_allowed(request, "GET")
    caller = await _authorize(request)
    if isinstance(caller, HttpResponse):
        return caller
    rows = await in_tenant(caller.schema_name, _ready_models, scope=caller.team_scope, slug=model)
    if not rows:
        return openai_error(
            404,
            f"The model {model!r} does not exist or is not ready in this organization.",
            code="model_not_found",
            param="model",
        )
    return JsonResponse(_model_output(rows[0], caller.org_slug))


def method_not_allowed(request: HttpRequest, allowed: str) -> JsonResponse:
    return openai_error(
        405,
        f"Method {request.method} is not allowed here; use {allowed}.",
        code="method_not_allowed",
        headers={"Allow": allowed},
    )


# --- chat completions -----------------------------------------------------------------------


def keepalive_seconds() -> float:
    """Read on every stream so tests (and operators, through the environment) can change it."""
    value = getattr(settings, "CADENCE_SSE_KEEPALIVE_SECONDS", None)
    if value is None:
        value = os.environ.get("CADENCE_SSE_KEEPALIVE_SECONDS") or DEFAULT_KEEPALIVE_SECONDS
    try:
        return max(0.01, float(value))
    except (TypeError, ValueError):
        return DEFAULT_KEEPALIVE_SECONDS


async def turn_request(request: HttpRequest, parser: Callable[[Any], Any]) -> Any:
    """What every turn endpoint of /v1 does before its own work: POST only, the key authorized,
    a member or above, the body parsed by `parser`, the model taken from the pool (the caller's
    teams may use it), and the parameters the model's framework honours. Returns
    (caller, parsed, acquired), or the OpenAI-shaped refusal to send."""
    if request.method != "POST":
        return method_not_allowed(request, "POST")
    caller = await _authorize(request)
    if isinstance(caller, HttpResponse):
        return caller
    if not role_at_least(caller.role, Role.MEMBER):
        return viewer_refused()
    parsed = await parse_body(request, parser)
    if isinstance(parsed, HttpResponse):
        return parsed
    acquired = await acquire_model(caller, parsed.model)
    if isinstance(acquired, HttpResponse):
        return acquired
    refused = unsupported_by_framework(parsed, acquired)
    if refused is not None:
        return openai_error(
            400,
            f"'{refused}' needs an orchestrator on the cadence framework; {acquired.slug!r} "
            "runs on another.",
            code="unsupported_parameter",
            param=refused,
        )
    return caller, parsed, acquired


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse:
    prepared = await turn_request(request, parse_completion_request)
    if isinstance(prepared, HttpResponse):
        return prepared
    caller, parsed, acquired = prepared
    if parsed.conversation_id is not None and not await in_tenant(
        caller.schema_name,
        _conversation_exists,
        conversation_id=parsed.conversation_id,
        key_id=caller.key_id,
        instance_id=acquired.instance_id,
    ):
        return openai_error(
            404,
            f"No conversation {parsed.conversation_id} of this API key with the model "
            f"{acquired.slug!r}.",
            code="conversation_not_found",
            param="cadence.conversation_id",
        )

    turn = Turn(
        caller=caller,
        request=parsed,
        acquired=acquired,
        run_id=str(uuid.uuid4()),
        created=int(time.time()),
    )
    _launch(turn)
    if parsed.stream:
        response = StreamingHttpResponse(_event_stream(turn), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response

    assert turn.outcome is not None
    # Shielded: a client that leaves cancels this view, not the turn.
    outcome: CompletionOutcome = await asyncio.shield(turn.outcome)
    if outcome.error is not None:
        return JsonResponse({"error": public_error(outcome.error)}, status=outcome.http_status)
    body: dict[str, Any] = {
        "id": turn.completion_id,
        "object": "chat.completion",
        "created": turn.created,
        "model": turn.slug,
        "choices": [
            {
                "index": 0,
                "message": _message(outcome),
                "logprobs": None,
                "finish_reason": outcome.finish_reason,
            }
        ],
        "usage": outcome.usage,
        "system_fingerprint": None,
    }
    if parsed.conversation_id is not None:
        body["cadence"] = {
            "conversation_id": parsed.conversation_id,
            "user_message_id": outcome.user_message_id,
            "assistant_message_id": outcome.assistant_message_id,
        }
    return JsonResponse(body)


def viewer_refused() -> JsonResponse:
    return openai_error(
        403,
        "This API key's role (viewer) may read but not chat; use a member key or above.",
        code="insufficient_role",
        type="permission_error",
    )


async def parse_body(request: HttpRequest, parse: Callable[[Any], Any]) -> Any:
    """The request's JSON body through `parse`, or the 400/413 response to send instead."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        raw = request.body
    except RequestDataTooBig:
        raw = None
    # Django checks only a declared Content-Length; a chunked body is measured here.
    if raw is None or (limit is not None and len(raw) > limit):
        return openai_error(
            413,
            f"The request body exceeds the limit of {limit} bytes.",
            code="payload_too_large",
        )
    try:
        return parse(json_loads(raw or b"null"))
    except InputError as exc:
        code = "invalid_json" if exc.code == "malformed_json" else exc.code
        return openai_error(400, exc.message, code=code, param=exc.field)
    except BadRequest as exc:
        return openai_error(400, exc.message, code=exc.code, param=exc.param)


async def acquire_model(caller, model: str) -> Any:
    """The orchestrator `model` names, from the pool, or the 404 (or build error) to send. One
    the caller's teams may not use is the same 404 as one that does not exist."""
    if not caller.team_scope.everything and not await in_tenant(
        caller.schema_name, _model_usable, scope=caller.team_scope, ref=model
    ):
        return openai_error(
            404,
            f"The model {model!r} does not exist in this organization.",
            code="model_not_found",
            param="model",
        )
    try:
        return await pool.acquire(
            schema_name=caller.schema_name, org_slug=caller.org_slug, ref=model
        )
    except ApplicationError as exc:
        if exc.code == "orchestrator_not_found":
            message = f"The model {model!r} does not exist in this organization."
        elif exc.code.startswith("orchestrator_"):
            message = f"The model {model!r} is not available: {exc.message}"
        else:  # building the runtime failed in some other way the orchestrator reported
            return openai_error(
                exc.status_code, exc.message, code=exc.code, type=_error_type(exc.status_code)
            )
        return openai_error(404, message, code="model_not_found", param="model")


def unsupported_by_framework(parsed, acquired) -> str | None:
    """The first request parameter only the native runtime honours, when another would run it."""
    from orchestrators.adapters.cadence import NativeRuntime

    if isinstance(acquired.runtime, NativeRuntime):
        return None
    # The LangGraph and Agents SDK runtimes build their own model calls: what they cannot be
    # told is refused, never silently dropped.
    if parsed.tools:
        return "tools"
    return next(iter(parsed.parameters), None)


def _message(outcome: CompletionOutcome) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": outcome.content or (None if outcome.tool_calls else ""),
        "refusal": None,
    }
    if outcome.tool_calls:
        message["tool_calls"] = outcome.tool_calls
    return message


def public_error(error: dict[str, Any]) -> dict[str, Any]:
    return {k: error.get(k) for k in ("message", "type", "param", "code")}


def sse(payload: dict[str, Any] | str) -> str:
    # orjson: compact as json.dumps with these separators, non-ASCII written as UTF-8 (the
    # response's charset) rather than escaped; the standard encoder was ~1% of a streamed turn.
    data = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    return f"data: {data}\n\n"


async def _event_stream(turn: Turn) -> AsyncIterator[str]:
    """Reads the turn's queue; closing this generator (the client left) leaves the turn running."""
    base = {
        "id": turn.completion_id,
        "object": "chat.completion.chunk",
        "created": turn.created,
        "model": turn.slug,
        "system_fingerprint": None,
    }
    with_usage = turn.request.include_usage

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        payload = {
            **base,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if with_usage:
            payload["usage"] = None  # as OpenAI does: only the last chunk carries it
        return sse(payload)

    # The role's chunk goes out with the first text (one write, not two: a write is ~3% of a
    # streamed turn's server CPU), or alone when none comes within the keep-alive interval.
    role = chunk({"role": "assistant", "content": ""})
    keepalive = keepalive_seconds()
    while True:
        items: list[tuple[str, Any]] = []
        # Waiting only when the client is ahead of the turn; in a timeout scope, not wait_for,
        # which costs a task per call.
        if turn.queue.empty():
            try:
                async with asyncio.timeout(keepalive):
                    items.append(await turn.queue.get())
            except TimeoutError:
                first, role = role or ": ping\n\n", ""
                yield first
                continue
        # Deltas that queued up while the client was slow go out as one chunk.
        while not turn.queue.empty():
            items.append(turn.queue.get_nowait())
        text = "".join(value for kind, value in items if kind == "token")
        outcome = next((value for kind, value in items if kind == "done"), None)
        if outcome is None:
            if text:
                head, role = role, ""
                yield head + chunk({"content": text})
            continue
        # The end in one write: the last text, the finish (or the error) and [DONE].
        tail = [role] if role else []
        if text:
            tail.append(chunk({"content": text}))
        if outcome.error is not None:
            tail.append(sse({"error": public_error(outcome.error)}))
        else:
            if outcome.tool_calls:
                tail.append(
                    chunk(
                        {
                            "tool_calls": [
                                {"index": index, **call}
                                for index, call in enumerate(outcome.tool_calls)
                            ]
                        }
                    )
                )
            tail.append(chunk({}, outcome.finish_reason))
            if with_usage:
                tail.append(sse({**base, "choices": [], "usage": outcome.usage}))
        tail.append(sse("[DONE]"))
        yield "".join(tail)
        return
