"""Chunked request bodies, read whole within the body limit before any Django code sees them.

A request sent with ``Transfer-Encoding: chunked`` has no Content-Length. Django's ASGI handler
reads such a body without a bound (spooling it to disk), and Django REST Framework treats a
missing Content-Length as an empty body, so a chunked POST to the REST API lost its fields
("content: This field is required") while /v1, which reads ``request.body`` itself, saw them.

This ASGI wrapper, in front of every HTTP surface, reads a chunked body up to
``DATA_UPLOAD_MAX_MEMORY_SIZE`` (CADENCE_MAX_BODY_BYTES), answers 413 as soon as it grows past
that, and otherwise hands the application the same body with its Content-Length set: from there
every parser and size check behaves as for any other request. Requests that declare their length
pass through untouched (``BodySizeLimitMiddleware`` refuses an oversized one from its header).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from cadence_site.errors import too_large_payload

Scope = dict[str, Any]
Message = dict[str, Any]


def _needs_reading(headers: list[tuple[bytes, bytes]]) -> bool:
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            return False
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return chunked


async def _send_too_large(scope: Scope, send, limit: int) -> None:
    body = json.dumps(too_large_payload(scope.get("path", ""), limit)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is never read: the connection cannot carry another request.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def read_chunked_bodies(app):
    """Wrap an ASGI HTTP application so that chunked bodies arrive whole, with a length."""

    async def wrapped(scope: Scope, receive, send) -> None:
        if scope["type"] != "http" or not _needs_reading(scope.get("headers", [])):
            return await app(scope, receive, send)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if limit is not None and size > limit:
                return await _send_too_large(scope, send, limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        headers = [
            (name, value) for name, value in scope["headers"] if name != b"transfer-encoding"
        ]
        headers.append((b"content-length", str(len(body)).encode()))
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            # After the body, what the server sends next (a disconnect while a reply streams).
            return await receive()

        return await app({**scope, "headers": headers}, replay, send)

    return wrapped
