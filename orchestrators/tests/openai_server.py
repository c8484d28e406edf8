"""A real HTTP server speaking the OpenAI chat-completions API, scripted by each test.

No test reaches the internet, and a mock of the SDK would not test what matters (SSE framing,
headers, status codes, the SDK's own parsing), so tests talk to this server over a socket.

    server.reply("Hello there", chunks=["Hel", "lo ", "there"])
    server.tool_call("clock", {"timezone": "UTC"}, fragments=3)
    server.error(429, retry_after="0")
    ...  # run the code under test against server.base_url
    assert server.requests[0].body["model"] == "gpt-test"

Scripted responses are served in order, one per ``POST /v1/chat/completions``; when the script is
empty the server answers ``default_text``. ``GET /v1/models`` lists ``models``. Latency: each
scripted response waits ``first_byte_delay`` before answering and ``chunk_delay`` between chunks
(seconds; the first content chunk is sent at once), or the server-wide defaults of those names.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CREATED = 1_700_000_000


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any


@dataclass
class Scripted:
    kind: str  # "text" | "tool_calls" | "error"
    chunks: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    fragments: int = 1
    finish_reason: str = "stop"
    usage: tuple[int, int] | None = None
    status: int = 200
    error_body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    first_byte_delay: float | None = None
    chunk_delay: float | None = None
    error_after: int | None = None  # send an SSE error payload after this many text chunks


def _words(text: str) -> int:
    return len(text.split())


def _prompt_tokens(body: dict[str, Any]) -> int:
    total = 0
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            total += _words(content)
    return total


def word_chunks(text: str) -> list[str]:
    """ "Hello big world" -> ["Hello ", "big ", "world"]: joined, exactly the text."""
    return re.split(r"(?<=\s)(?=\S)", text)


def _split_even(text: str, parts: int) -> list[str]:
    parts = max(1, min(parts, len(text) or 1))
    size = -(-len(text) // parts) if text else 1
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class FakeOpenAIServer:
    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.script: deque[Scripted] = deque()
        self.requests: list[RecordedRequest] = []
        self.models = ["gpt-test"]
        self.default_text = "Hello from the fake server."
        self.first_byte_delay = 0.0
        self.chunk_delay = 0.0
        # Only this key is accepted when set (401 otherwise, on every endpoint).
        self.required_key: str | None = None
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        self._httpd = ThreadingHTTPServer((self.host, 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def reset(self) -> None:
        with self._lock:
            self.script.clear()
            self.requests.clear()
            self.models = ["gpt-test"]
            self.default_text = "Hello from the fake server."
            self.first_byte_delay = 0.0
            self.chunk_delay = 0.0
            self.required_key = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # --- scripting ------------------------------------------------------------------------------

    def reply(
        self,
        text: str,
        *,
        chunks: list[str] | None = None,
        usage: tuple[int, int] | None = None,
        finish_reason: str = "stop",
        first_byte_delay: float | None = None,
        chunk_delay: float | None = None,
        error_after: int | None = None,
    ) -> None:
        """A text answer, streamed as ``chunks`` (default: one chunk per word, spaces kept).

        ``error_after=n`` breaks the stream after ``n`` chunks with an ``error`` payload, as a
        provider does when it fails mid-answer (the official client raises on it).
        """
        if chunks is None:
            chunks = word_chunks(text)
        assert "".join(chunks) == text, "chunks must add up to the text"
        self._push(
            Scripted(
                "text",
                chunks=chunks,
                usage=usage,
                finish_reason=finish_reason,
                first_byte_delay=first_byte_delay,
                chunk_delay=chunk_delay,
                error_after=error_after,
            )
        )

    def tool_call(
        self,
        name: str,
        arguments: dict[str, Any] | str,
        *,
        id: str = "call_1",  # noqa: A002 - the API's field name
        fragments: int = 3,
        usage: tuple[int, int] | None = None,
    ) -> None:
        """One tool call whose arguments string streams in ``fragments`` pieces."""
        self.tool_calls([(id, name, arguments)], fragments=fragments, usage=usage)

    def tool_calls(
        self,
        calls: list[tuple[str, str, dict[str, Any] | str]],
        *,
        fragments: int = 3,
        usage: tuple[int, int] | None = None,
    ) -> None:
        specs = [
            {"id": cid, "name": name, "arguments": a if isinstance(a, str) else json.dumps(a)}
            for cid, name, a in calls
        ]
        self._push(
            Scripted(
                "tool_calls",
                tool_calls=specs,
                fragments=fragments,
                usage=usage,
                finish_reason="tool_calls",
            )
        )

    def error(
        self,
        status: int,
        *,
        message: str = "scripted error",
        type: str = "server_error",  # noqa: A002 - the API's field name
        retry_after: str | None = None,
        first_byte_delay: float | None = None,
    ) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        body = {"error": {"message": message, "type": type, "param": None, "code": None}}
        self._push(
            Scripted(
                "error",
                status=status,
                error_body=body,
                headers=headers,
                first_byte_delay=first_byte_delay,
            )
        )

    def _push(self, item: Scripted) -> None:
        with self._lock:
            self.script.append(item)

    def _next(self) -> Scripted:
        with self._lock:
            if self.script:
                return self.script.popleft()
            text = self.default_text
        return Scripted("text", chunks=word_chunks(text))

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    @property
    def last_request(self) -> RecordedRequest:
        return self.requests[-1]


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: the connection closes after each response, so SSE needs no chunked framing.
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # keep test output clean

        def _send_json(
            self, status: int, payload: Any, headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _key_rejected(self) -> bool:
            if (
                server.required_key is None
                or self.headers.get("Authorization") == f"Bearer {server.required_key}"
            ):
                return False
            self._send_json(
                401,
                {
                    "error": {
                        "message": "Incorrect API key provided.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
            return True

        def do_GET(self) -> None:  # noqa: N802
            server._record(RecordedRequest("GET", self.path, _headers(self), None))
            if self._key_rejected():
                return
            if self.path.rstrip("/") == "/v1/models":
                data = [
                    {"id": m, "object": "model", "created": CREATED, "owned_by": "fake"}
                    for m in server.models
                ]
                self._send_json(200, {"object": "list", "data": data})
            else:
                self._send_json(
                    404, {"error": {"message": "not found", "type": "invalid_request_error"}}
                )

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                body = raw.decode(errors="replace")
            server._record(RecordedRequest("POST", self.path, _headers(self), body))
            if self._key_rejected():
                return
            if self.path.rstrip("/") != "/v1/chat/completions" or not isinstance(body, dict):
                self._send_json(
                    404, {"error": {"message": "not found", "type": "invalid_request_error"}}
                )
                return
            item = server._next()
            delay = (
                server.first_byte_delay if item.first_byte_delay is None else item.first_byte_delay
            )
            if delay:
                time.sleep(delay)
            try:
                if item.kind == "error":
                    self._send_json(item.status, item.error_body, item.headers)
                elif body.get("stream"):
                    self._stream(item, body)
                else:
                    self._complete(item, body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test): nothing to do

        def _usage(self, item: Scripted, body: dict[str, Any]) -> dict[str, int]:
            if item.usage is not None:
                prompt, completion = item.usage
            else:
                prompt, completion = _prompt_tokens(body), _words("".join(item.chunks))
            return {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }

        def _complete(self, item: Scripted, body: dict[str, Any]) -> None:
            message: dict[str, Any] = {"role": "assistant", "content": "".join(item.chunks) or None}
            if item.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments"]},
                    }
                    for c in item.tool_calls
                ]
            self._send_json(
                200,
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": body.get("model", ""),
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": item.finish_reason,
                            "logprobs": None,
                        }
                    ],
                    "usage": self._usage(item, body),
                },
            )

        def _stream(self, item: Scripted, body: dict[str, Any]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            model = body.get("model", "")
            pause = server.chunk_delay if item.chunk_delay is None else item.chunk_delay

            def send(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> None:
                chunk = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": model,
                    "choices": choices,
                }
                if usage is not None:
                    chunk["usage"] = usage
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()

            def delta(d: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
                return [{"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}]

            self.wfile.write(b": keepalive\n\n")  # a comment line: clients must ignore it
            send(delta({"role": "assistant", "content": ""}))
            for position, piece in enumerate(item.chunks):
                if item.error_after is not None and position == item.error_after:
                    error = {"error": {"message": "stream broke", "type": "server_error"}}
                    self.wfile.write(f"data: {json.dumps(error)}\n\n".encode())
                    self.wfile.flush()
                    return
                if pause and position:
                    time.sleep(pause)
                send(delta({"content": piece}))
            for index, call in enumerate(item.tool_calls):
                pieces = _split_even(call["arguments"], item.fragments)
                head = {
                    "index": index,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": ""},
                }
                send(delta({"tool_calls": [head]}))
                for piece in pieces:
                    if pause:
                        time.sleep(pause)
                    send(
                        delta({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                    )
            send(delta({}, item.finish_reason))
            if (body.get("stream_options") or {}).get("include_usage"):
                send([], self._usage(item, body))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


def _headers(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    return {name.lower(): value for name, value in handler.headers.items()}
