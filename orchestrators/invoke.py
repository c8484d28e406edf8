"""Running one turn of an orchestrator and collecting its events (REST invoke, the admin's try-it box)."""

from __future__ import annotations

from typing import Any

from cadence_site.errors import ApplicationError
from orchestrators.pool import pool
from orchestrators.runtime import (
    FinalEvent,
    LLMError,
    RunContext,
    StepEvent,
    ToolCallEvent,
    ToolResultEvent,
)

_LLM_STATUS = {"llm_rate_limited": 429, "llm_timeout": 504, "egress_denied": 400}


def llm_error_to_application(exc: LLMError) -> ApplicationError:
    return ApplicationError(
        str(exc),
        exc.code,
        {"provider_status": exc.status} if exc.status else {},
        status=_LLM_STATUS.get(exc.code, 502),
    )


async def invoke(
    *, org, ref: str, history: list[dict[str, Any]], message: str, user: str = ""
) -> dict[str, Any]:
    acquired = await pool.acquire(schema_name=org.schema_name, org_slug=org.slug, ref=ref)
    tool_calls: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    final: FinalEvent | None = None
    try:
        async for event in acquired.runtime.stream(
            history, message, RunContext(org_slug=org.slug, user=user)
        ):
            if isinstance(event, ToolCallEvent):
                tool_calls.append(
                    {"id": event.id, "name": event.name, "arguments": event.arguments}
                )
            elif isinstance(event, ToolResultEvent):
                for call in tool_calls:
                    if call["id"] == event.id:
                        call["result"], call["error"] = event.result, event.error
            elif isinstance(event, StepEvent) and event.status != "started":
                steps.append(
                    {"name": event.name, "status": event.status, "duration_ms": event.duration_ms}
                )
            elif isinstance(event, FinalEvent):
                final = event
    except LLMError as exc:
        raise llm_error_to_application(exc) from None
    if final is None:
        raise ApplicationError("The orchestrator ended without a reply.", "no_reply", status=502)
    return {
        "message": {"role": "assistant", "content": final.content},
        "finish_reason": final.finish_reason,
        "usage": final.usage.as_dict(),
        "tool_calls": tool_calls,
        "steps": steps,
        "orchestrator": {
            "id": acquired.instance_id,
            "slug": acquired.slug,
            "version": acquired.version,
            "config_hash": acquired.config_hash,
        },
    }
