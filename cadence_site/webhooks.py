"""Signed webhooks: the one way Cadence posts an event to a URL an organization chose.

Queued runs' completion callbacks (engine/durable/callbacks.py) and alert notifications
(engine/alerts/) both go through `webhook_post`: the egress policy (cadence_site/outbound.py) at
the check and at connect time, a timeout, no redirects, and the header

    X-Cadence-Signature: t=<unix time>,sha256=<hex HMAC-SHA256 of "<t>.<body>">

The timestamp lets a receiver refuse replays. Retrying is the caller's Celery task's business
(acks_late, exponential backoff): a non-2xx answer or an unreachable URL raises `WebhookError`,
which callers retry; an address the policy refuses raises `EgressDenied`, which retrying cannot
fix.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from asgiref.sync import async_to_sync

SIGNATURE_HEADER = "X-Cadence-Signature"


class WebhookError(Exception):
    """A delivery that failed and may succeed later (unreachable, or a non-2xx answer)."""


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    stamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},sha256={mac}"


def signature_valid(secret: str, body: bytes, header: str) -> bool:
    """What a receiver checks (also used by tests): the header's MAC over its own timestamp."""
    try:
        parts = dict(part.split("=", 1) for part in header.split(","))
        stamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    return hmac.compare_digest(signature_header(secret, body, stamp), header)


async def _post(url: str, body: bytes, headers: dict[str, str], seconds: float) -> int:
    import httpx

    from cadence_site.outbound import acheck_url, async_client

    await acheck_url(url)
    try:
        async with async_client(timeout=seconds) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise WebhookError(f"the URL is unreachable: {type(exc).__name__}") from None
    return response.status_code


def webhook_post(
    *,
    url: str,
    body: bytes,
    secret: str,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> int:
    """POST a signed JSON body; the 2xx status, else WebhookError (retry) or EgressDenied."""
    sent = {
        "Content-Type": "application/json",
        **(headers or {}),
        SIGNATURE_HEADER: signature_header(secret, body),
    }
    status = async_to_sync(_post)(url, body, sent, timeout)
    if not 200 <= status < 300:
        raise WebhookError(f"the URL answered {status}")
    return status
