"""Signed completion callbacks of queued runs (through the egress policy, retried by Celery).

The body is the run's id, status, state and output; `X-Cadence-Signature: t=<unix time>,
sha256=<hex HMAC-SHA256 of "<t>.<body>">` with the organization's callback secret (derived from
the deployment's SECRET_KEY and the organization, shown to its admins at
`GET /api/v1/orgs/<slug>/callbacks/secret/`). The timestamp lets a receiver refuse replays.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings

from cadence_site.webhooks import WebhookError, signature_header, webhook_post

# A failed callback is retried by its Celery task; the shared webhook error is that signal.
CallbackError = WebhookError
__all__ = ["CallbackError", "callback_secret", "callback_send", "signature_header"]


def callback_secret(schema_name: str) -> str:
    return hmac.new(
        settings.SECRET_KEY.encode(), f"cadence-callback:{schema_name}".encode(), hashlib.sha256
    ).hexdigest()


def callback_send(*, schema_name: str, url: str, body: bytes) -> int:
    return webhook_post(url=url, body=body, secret=callback_secret(schema_name))
