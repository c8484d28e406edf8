"""The floor for benchmarks/chat_load.py: the offline provider behind a bare ASGI callable.

    .venv/bin/python -m uvicorn bare_stream_app:app --app-dir benchmarks --port 8001

POST /v1/chat/completions answers as the OpenAI API does (`stream: true` as server-sent events,
one chunk per delta, then `data: [DONE]`; otherwise one JSON body), using
`orchestrators.llm.offline.OfflineProvider` directly: no Django, no authentication, no tenancy, no
storage. Whatever the real endpoint costs beyond this is the platform's overhead.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrators.llm.offline import OfflineProvider  # noqa: E402
from orchestrators.runtime import LLMDelta, LLMResult  # noqa: E402

_provider = OfflineProvider()
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
]
_JSON_HEADERS = [(b"content-type", b"application/json")]


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _respond(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": _JSON_HEADERS})
    await send({"type": "http.response.body", "body": body})


def _chunk(base: dict, delta: dict, finish_reason: str | None = None) -> bytes:
    payload = {
        **base,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def _completions(receive, send) -> None:
    try:
        request = json.loads(await _read_body(receive))
        messages = request["messages"]
    except (ValueError, KeyError, TypeError):
        return await _respond(send, 400, {"error": {"message": "bad request"}})
    model = str(request.get("model", "offline"))
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": model,
    }
    if not request.get("stream"):
        result = None
        async for item in _provider.stream(messages):
            if isinstance(item, LLMResult):
                result = item
        return await _respond(
            send,
            200,
            {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.content},
                        "finish_reason": result.finish_reason,
                    }
                ],
                "usage": result.usage.as_dict(),
            },
        )
    base["object"] = "chat.completion.chunk"
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    body = {"type": "http.response.body", "more_body": True}
    await send({**body, "body": _chunk(base, {"role": "assistant", "content": ""})})
    finish = "stop"
    async for item in _provider.stream(messages):
        if isinstance(item, LLMDelta):
            await send({**body, "body": _chunk(base, {"content": item.content})})
        elif isinstance(item, LLMResult):
            finish = item.finish_reason
    await send({**body, "body": _chunk(base, {}, finish)})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["method"] == "POST" and scope["path"] == "/v1/chat/completions":
        return await _completions(receive, send)
    await _respond(send, 404, {"error": {"message": "not found"}})
