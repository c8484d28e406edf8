"""Before-and-after audit records for changes inside an organization's schema (LLM configurations,
orchestrators, and whatever else a service changes there), written in the current schema.

Secrets never reach a record: values under secret-looking keys are masked at any depth, and
callers snapshot what is safe (an LLM key appears only as its hint, `sk-…3456`).
"""

from __future__ import annotations

import re
from typing import Any

from django.db import connection, transaction

from cadence_site.requestlog import principal_var
from tenants.audit.feed import audit_publish
from tenants.audit.models import AuditEvent

MASK = "•••"
_SECRET_KEY = re.compile(
    r"(^|_)(api_?key|secret|password|passwd|token|authorization|credentials?)$", re.IGNORECASE
)
_MAX_DEPTH = 20


def masked(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        return MASK
    if isinstance(value, dict):
        return {
            str(k): (
                MASK if _SECRET_KEY.search(str(k)) and v not in ("", None) else masked(v, depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [masked(v, depth + 1) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def actor_label(actor) -> str:
    """`user:<username>`, `key:<prefix>`, or the request's principal, or `system` (commands)."""
    if actor is None:
        return principal_var.get() or "system"
    if isinstance(actor, str):
        return actor
    prefix = getattr(actor, "prefix", None)
    if prefix and hasattr(actor, "secret_hash"):
        return f"key:{prefix}"
    api_key = getattr(actor, "api_key", None)
    if api_key is not None:
        return f"key:{api_key.prefix}"
    return f"user:{actor.get_username()}"


def audit_change(
    *,
    action: str,
    target: str,
    actor=None,
    before: dict | None = None,
    after: dict | None = None,
) -> AuditEvent:
    """Records `action` on `target` with what changed. Call it inside the writing transaction."""
    before, after = (
        masked(before) if before is not None else None,
        masked(after) if after is not None else None,
    )
    details: dict[str, Any] = {}
    if before is not None:
        details["before"] = before
    if after is not None:
        details["after"] = after
    if before is not None and after is not None:
        details["changed"] = sorted(
            k for k in set(before) | set(after) if before.get(k) != after.get(k)
        )
    event = AuditEvent.objects.create(
        action=action, actor=actor_label(actor)[:200], target=target[:200], details=details
    )
    schema = connection.schema_name
    transaction.on_commit(lambda: audit_publish(schema_name=schema, event=event))
    return event
