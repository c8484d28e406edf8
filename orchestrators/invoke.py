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
    owner_user_id: int | None = None,
    owner_api_key_id: str | None = None,
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
            owner_user_id=owner_user_id,
            owner_api_key_id=owner_api_key_id,
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
