"""Signed completion callbacks of queued runs (through the egress policy, retried by Celery).

The body is the run's id, status, state and output; `X-Cadence-Signature: t=<unix time>,
sha256=<hex HMAC-SHA256 of "<t>.<body>">` with the organization's callback secret (derived from
the deployment's SECRET_KEY and the organization, shown to its admins at
`GET /api/v1/orgs/<slug>/callbacks/secret/`). The timestamp lets a receiver refuse replays.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from asgiref.sync import async_to_sync
from django.conf import settings


class CallbackError(Exception):
    pass


def callback_secret(schema_name: str) -> str:
    return hmac.new(
        settings.SECRET_KEY.encode(), f"cadence-callback:{schema_name}".encode(), hashlib.sha256
    ).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    stamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},sha256={mac}"


async def _post(url: str, body: bytes, signature: str) -> int:
    import httpx

    from cadence_site.outbound import acheck_url, async_client

    await acheck_url(url)
    try:
        async with async_client(timeout=10.0) as client:
            response = await client.post(
                url,
                content=body,
                headers={"Content-Type": "application/json", "X-Cadence-Signature": signature},
            )
    except httpx.HTTPError as exc:
        raise CallbackError(f"the callback URL is unreachable: {type(exc).__name__}") from None
    return response.status_code


def callback_send(*, schema_name: str, url: str, body: bytes) -> int:
    status = async_to_sync(_post)(url, body, signature_header(callback_secret(schema_name), body))
    if not 200 <= status < 300:
        raise CallbackError(f"the callback URL answered {status}")
    return status
