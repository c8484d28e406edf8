"""Rate limits on WebSocket messages, for every consumer at once.

Wraps the consumers inside TenantWebsocketMiddleware (which put the organization and the caller
in the scope): each client frame is counted in the organization's request bucket, the key's own,
and the caller's "frames" bucket, in one decision. A refused frame never reaches the consumer;
the client gets an error frame with the same figures a 429 carries, and the socket stays open.
"""

from __future__ import annotations

import json

from tenants import ratelimit
from tenants.context import in_public
from tenants.limits import plans
from tenants.limits.enforce import caller_of, refusal_message, request_buckets


async def _limits_for(org_id: int, key_id: str | None):
    limits = plans.org_limits_cached(org_id=org_id)
    key_limits = plans.key_limits_cached(key_id=key_id) if key_id else None
    if limits is None or (key_id and key_limits is None):

        def read():
            return (
                plans.org_limits(org_id=org_id),
                plans.key_limits(key_id=key_id) if key_id else None,
            )

        limits, key_limits = await in_public(read)
    return limits, key_limits


def error_frame(decision: ratelimit.Decision) -> str:
    return json.dumps(
        {
            "type": "error",
            "code": "rate_limited",
            "message": refusal_message(decision),
            "retry_after": decision.retry_after_seconds,
            "limit": decision.limit,
            "remaining": 0,
            "reset": round(decision.reset, 3),
        }
    )


class FrameRateLimitMiddleware:
    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        org = scope.get("org") if scope["type"] == "websocket" else None
        if org is None:
            return await self.inner(scope, receive, send)
        caller = caller_of(scope["user"])

        async def limited_receive():
            while True:
                message = await receive()
                if message.get("type") != "websocket.receive":
                    return message
                limits, key_limits = await _limits_for(org.id, caller.key_id)
                decision = await ratelimit.adecide(
                    request_buckets(
                        limits=limits, caller=caller, key_limits=key_limits, scope="frames"
                    )
                )
                if decision.allowed:
                    return message
                await send({"type": "websocket.send", "text": error_frame(decision)})

        return await self.inner(scope, limited_receive, send)
