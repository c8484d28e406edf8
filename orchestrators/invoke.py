"""One turn for REST invoke and the admin's try-it box: the turn pipeline, delivered as one JSON object."""

from __future__ import annotations

from typing import Any

from engine.runs.pipeline import TurnRequest, turn_run


async def invoke(
    *,
    org,
    ref: str,
    history: list[dict[str, Any]],
    message: str,
    user: str = "",
    trigger: str = "invoke",
) -> dict[str, Any]:
    outcome = await turn_run(
        TurnRequest(
            schema_name=org.schema_name,
            org_slug=org.slug,
            ref=ref,
            message=message,
            history=history,
            trigger=trigger,
            principal=user,
        )
    )
    if outcome.error is not None:
        raise outcome.error
    acquired = outcome.acquired
    return {
        "message": {"role": "assistant", "content": outcome.content},
        "finish_reason": outcome.finish_reason,
        "usage": outcome.usage,
        "tool_calls": outcome.tool_calls,
        "steps": outcome.steps,
        "run": outcome.run_id,
        "orchestrator": {
            "id": acquired.instance_id,
            "slug": acquired.slug,
            "version": acquired.version,
            "config_hash": acquired.config_hash,
        },
    }
