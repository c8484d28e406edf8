"""Anchoring signed tree heads outside the database: a witness webhook and/or a witness file.

A witness keeps every checkpoint it receives. Later, a verifier holding those checkpoints checks
that the log still extends each of them (a consistency proof), so a rewrite of the whole
database, keys included, is detectable. The webhook goes through the one outbound client (egress
policy, timeouts) and carries an HMAC-SHA256 of its body in `X-Cadence-Signature`.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.utils import timezone

from engine.trust import log
from engine.trust.models import TreeHead


class WitnessError(Exception):
    pass


def witness_configured() -> bool:
    return bool(settings.CADENCE_WITNESS_FILE or settings.CADENCE_WITNESS_URL)


def _append_file(path: str, note: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        # One writer at a time: several workers may publish heads of several organizations.
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, (note if note.endswith("\n") else note + "\n").encode())
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def signature_header(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def _post(url: str, body: bytes, secret: str) -> int:
    import httpx

    from cadence_site.outbound import acheck_url, async_client

    await acheck_url(url)
    headers = {"Content-Type": "application/json"}
    if secret:
        headers["X-Cadence-Signature"] = signature_header(body, secret)
    try:
        async with async_client(timeout=10.0) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise WitnessError(f"the witness is unreachable: {type(exc).__name__}") from None
    return response.status_code


def witness_payload(tree_head: TreeHead) -> dict[str, Any]:
    out = log.checkpoint_output(tree_head)
    return {k: out[k] for k in ("origin", "size", "root_hash", "checkpoint")}


def tree_head_witness(*, tree_head: TreeHead) -> None:
    """Send one signed tree head to the configured witnesses; raises WitnessError to be retried."""
    if settings.CADENCE_WITNESS_FILE:
        _append_file(settings.CADENCE_WITNESS_FILE, tree_head.note)
    if settings.CADENCE_WITNESS_URL:
        body = json.dumps(witness_payload(tree_head), separators=(",", ":")).encode()
        status = async_to_sync(_post)(
            settings.CADENCE_WITNESS_URL, body, settings.CADENCE_WITNESS_SECRET
        )
        if not 200 <= status < 300:
            TreeHead.objects.filter(pk=tree_head.pk).update(
                witness_error=f"the witness answered {status}"
            )
            raise WitnessError(f"the witness answered {status}")
    TreeHead.objects.filter(pk=tree_head.pk).update(witnessed_at=timezone.now(), witness_error="")
