"""Which buckets a call is counted in, and the refusal it gets: one place for every surface.

Every authenticated call an organization's member or key makes, on REST, /v1 or a socket frame,
is counted in the organization's request bucket (the plan's requests per minute and burst), in
the caller's own bucket when its API key has a limit, and in a surface bucket where the surface
has one (tickets, plugin uploads, socket frames per principal). The script admits it into all of
them or none, in one round trip (tenants/ratelimit.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from cadence_site.errors import ApplicationError
from tenants.limits.plans import KeyLimits, Limits
from tenants.ratelimit import Bucket, Decision, bucket_key

# Per principal, per minute, on top of the organization's request bucket. Settings may override.
DEFAULT_SCOPE_LIMITS = {
    "tickets": 30,  # WebSocket ticket issue
    "uploads": 10,  # plugin uploads
    "frames": 120,  # WebSocket messages on one principal's sockets
}
ORG_PRINCIPAL = "*"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is counted: "key:<prefix>" or "user:<id>", and the key's id when it is a key."""

    principal: str
    key_id: str | None = None


def caller_of(user) -> Caller:
    key = getattr(user, "api_key", None)
    if key is not None:
        return Caller(f"key:{key.prefix}", str(key.pk))
    return Caller(f"user:{user.pk}")


def scope_limit(scope: str) -> int:
    return {**DEFAULT_SCOPE_LIMITS, **getattr(settings, "CADENCE_SCOPE_LIMITS", {})}[scope]


def request_buckets(
    *, limits: Limits, caller: Caller, key_limits: KeyLimits | None, scope: str | None = None
) -> list[Bucket]:
    tenant = limits.tenant
    buckets = [
        Bucket(
            bucket_key(tenant, ORG_PRINCIPAL, "requests"),
            limits.requests_per_minute,
            60.0,
            limits.request_burst,
            "organization",
        )
    ]
    if key_limits is not None and key_limits.requests_per_minute:
        buckets.append(
            Bucket(
                bucket_key(tenant, caller.principal, "requests"),
                key_limits.requests_per_minute,
                60.0,
                key_limits.request_burst,
                "api key",
            )
        )
    if scope is not None:
        buckets.append(
            Bucket(
                bucket_key(tenant, caller.principal, scope), scope_limit(scope), 60.0, None, scope
            )
        )
    return buckets


_WHAT = {
    "organization": "this organization's plan allows {limit} requests per minute",
    "api key": "this API key allows {limit} requests per minute",
    "tickets": "a caller may obtain {limit} WebSocket tickets per minute",
    "uploads": "a caller may upload {limit} plugins per minute",
    "frames": "a caller may send {limit} WebSocket messages per minute",
    "login account": "an account may try to log in {limit} times per minute",
    "login address": "an address may try to log in {limit} times per minute",
}


def refusal_message(decision: Decision) -> str:
    what = _WHAT.get(decision.bucket, "the limit is {limit} per minute").format(
        limit=decision.limit
    )
    if decision.degraded:
        return "Rate limits cannot be checked right now; try again shortly."
    return f"Rate limit reached: {what}. Try again in {decision.retry_after_seconds} s."


class RateLimited(ApplicationError):
    """429 with Retry-After and X-RateLimit-* headers, in the one error shape."""

    status_code = 429

    def __init__(self, decision: Decision):
        super().__init__(
            refusal_message(decision),
            "rate_limited",
            {
                "limit": decision.limit,
                "period_seconds": int(decision.period),
                "bucket": decision.bucket,
                "retry_after": decision.retry_after_seconds,
            },
        )
        self.decision = decision
        self.headers = decision.headers()
