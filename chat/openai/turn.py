"""One completion: its own task, recorded as a Run (and in a conversation when asked), outliving its client."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from cadence_site.errors import ApplicationError
from cadence_site.requestlog import org_var, principal_var, request_id_var
from chat.openai import FINISH_REASONS
from chat.openai.access import Caller
from chat.openai.errors import _application_error_payload
from chat.openai.validation import CompletionRequest
from engine.runs import RunRecorder
from orchestrators.invoke import llm_error_to_application
from orchestrators.runtime import FinalEvent, LLMError, RunContext, TokenEvent
from tenants.context import in_tenant

logger = logging.getLogger(__name__)
_background: set[asyncio.Task] = set()

# --- the turn -------------------------------------------------------------------------------


@dataclass
class TurnOutcome:
    status: str  # a Run status: succeeded, failed, cancelled
    content: str = ""
    finish_reason: str = "stop"
    usage: dict[str, int] = field(default_factory=dict)
    error: dict[str, Any] | None = None  # OpenAI's error object
    http_status: int = 200
    user_message_id: str | None = None
    assistant_message_id: str | None = None


@dataclass
class Turn:
    caller: Caller
    request: CompletionRequest
    runtime: Any
    instance_id: str
    slug: str
    config_hash: str
    run_id: str
    created: int
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    outcome: asyncio.Future | None = None

    @property
    def completion_id(self) -> str:
        return f"chatcmpl-{uuid.UUID(self.run_id).hex}"


def _conversation_exists(*, conversation_id: str, key_id: str, instance_id: str) -> bool:
    from chat.models import Conversation

    return Conversation.objects.filter(
        pk=conversation_id, owner_api_key_id=key_id, orchestrator_id=instance_id
    ).exists()


def _begin(*, turn: Turn, recorder: RunRecorder) -> tuple[str | None, str | None]:
    """Synchronous, in the tenant's schema: the Run row, and the user's message stored before the
    model runs (with a placeholder for the reply, so the two keep adjacent sequence numbers)."""
    from chat.models import Message
    from chat.services import message_append

    recorder.start()
    conversation_id = turn.request.conversation_id
    if conversation_id is None:
        return None, None
    user = message_append(
        conversation_id=conversation_id, role=Message.Role.USER, content=turn.request.message
    )
    assistant = message_append(
        conversation_id=conversation_id,
        role=Message.Role.ASSISTANT,
        content="",
        status=Message.Status.STREAMING,
    )
    return str(user.id), str(assistant.id)


def _finish(*, turn: Turn, recorder: RunRecorder, outcome: TurnOutcome) -> None:
    from chat.models import Message
    from chat.services import message_finish

    error_text = (
        f"{outcome.error['code']}: {outcome.error['message']}" if outcome.error is not None else ""
    )
    recorder.finish(
        status=outcome.status, output=outcome.content, usage=outcome.usage, error=error_text
    )
    if outcome.assistant_message_id is None:
        return
    status = {
        "succeeded": Message.Status.COMPLETE,
        "failed": Message.Status.FAILED,
        "cancelled": Message.Status.CANCELLED,
    }[outcome.status]
    message_finish(
        message_id=outcome.assistant_message_id,
        status=status,
        content=outcome.content,
        usage=outcome.usage,
        error=error_text,
        run_id=recorder.run_id,
    )


async def _run(turn: Turn) -> None:
    """The whole turn, whatever the client does: record, stream into the queue, record the end."""
    caller, request = turn.caller, turn.request
    recorder = RunRecorder(
        schema_name=caller.schema_name,
        orchestrator_id=turn.instance_id,
        orchestrator_slug=turn.slug,
        config_hash=turn.config_hash,
        trigger="openai",
        principal=caller.principal,
        conversation_id=request.conversation_id,
        input={"message": request.message, "history_messages": len(request.history)},
    )
    # The id is chosen here so the response can name the run before its row exists.
    recorder.fields["id"] = turn.run_id
    outcome = TurnOutcome(status="succeeded")
    streamed: list[str] = []
    beginning: asyncio.Future | None = None
    try:
        if request.conversation_id is not None:
            # The user's message is stored before the model runs.
            outcome.user_message_id, outcome.assistant_message_id = await in_tenant(
                caller.schema_name, _begin, turn=turn, recorder=recorder
            )
        else:
            # Stateless: the run's row is written beside the model call; first tokens don't wait.
            beginning = asyncio.ensure_future(
                in_tenant(caller.schema_name, _begin, turn=turn, recorder=recorder)
            )
        final: FinalEvent | None = None
        events = turn.runtime.stream(
            request.history,
            request.message,
            RunContext(org_slug=caller.org_slug, run_id=turn.run_id, user=caller.key_prefix),
        )
        # aclosing: on an error or a shutdown the runtime's own cleanup (its engine task, open
        # provider streams) runs now, not whenever the generator is garbage-collected.
        async with aclosing(events):
            async for event in events:
                recorder.observe(event)
                if isinstance(event, TokenEvent):
                    if event.delta:
                        streamed.append(event.delta)
                        turn.queue.put_nowait(("token", event.delta))
                elif isinstance(event, FinalEvent):
                    final = event
        if final is None:
            raise ApplicationError(
                "The orchestrator ended without a reply.", "no_reply", status=502
            )
        text = "".join(streamed)
        # What the final reply adds to what streamed (a step-limit notice is never streamed).
        if final.content.startswith(text) and final.content != text:
            turn.queue.put_nowait(("token", final.content[len(text) :]))
        elif not text and final.content:
            turn.queue.put_nowait(("token", final.content))
        outcome.content = final.content
        outcome.usage = final.usage.as_dict()
        outcome.finish_reason = FINISH_REASONS.get(final.finish_reason, "stop")
    except asyncio.CancelledError:
        # Only a server shutting down cancels this task; the client leaving does not.
        outcome.status, outcome.content = "cancelled", "".join(streamed)
        outcome.error = {
            "message": "The server stopped before the reply was complete.",
            "type": "api_error",
            "param": None,
            "code": "cancelled",
        }
        outcome.http_status = 503
    except LLMError as exc:
        app_error = llm_error_to_application(exc)
        outcome.status, outcome.content = "failed", "".join(streamed)
        outcome.error, outcome.http_status = (
            _application_error_payload(app_error),
            app_error.status_code,
        )
    except ApplicationError as exc:
        outcome.status, outcome.content = "failed", "".join(streamed)
        outcome.error, outcome.http_status = _application_error_payload(exc), exc.status_code
    except Exception:
        logger.exception("openai-compatible turn failed", extra={"run": turn.run_id})
        outcome.status, outcome.content = "failed", "".join(streamed)
        outcome.error = {
            "message": "The orchestrator failed unexpectedly.",
            "type": "api_error",
            "param": None,
            "code": "server_error",
        }
        outcome.http_status = 500
    if beginning is not None:
        await asyncio.gather(beginning, return_exceptions=True)
    try:
        # Shielded: a cancelled turn is still recorded.
        await asyncio.shield(
            in_tenant(caller.schema_name, _finish, turn=turn, recorder=recorder, outcome=outcome)
        )
    except Exception:
        logger.exception("recording an openai-compatible turn failed", extra={"run": turn.run_id})
    finally:
        turn.queue.put_nowait(("done", outcome))
        if turn.outcome is not None and not turn.outcome.done():
            turn.outcome.set_result(outcome)


def _launch(turn: Turn) -> None:
    """Start the turn in a fresh context on the running loop, so that it outlives the request.

    Inherited context would tie its database calls to the request's thread executor (asgiref's
    ThreadSensitiveContext, or the sync middleware's CurrentThreadExecutor), which is gone once
    the response ends; in a fresh context they run on asgiref's shared thread, as consumers' do.
    The log context (request, organization, principal) is carried over by hand.
    """
    loop = asyncio.get_running_loop()
    turn.outcome = loop.create_future()
    context = contextvars.Context()
    for var in (request_id_var, org_var, principal_var):
        context.run(var.set, var.get())
    task = loop.create_task(_run(turn), context=context)
    _background.add(task)
    task.add_done_callback(_background.discard)
