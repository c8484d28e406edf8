"""A built-in model that needs no network: deterministic replies for demos and tests.

What it answers, from the last message of the conversation:

- a user message containing ``/tool <name> <json-args>`` (for example
  ``please /tool calculator {"expression": "2*(3+4)"}``): a call of tool ``<name>`` with those
  arguments (``{}`` when none are given; arguments that are not a JSON object become
  ``{"_raw": "<text>"}``, as with a real model), no text, finish reason ``tool_calls``;
- one or more ``tool`` messages (results of the calls it asked for):
  ``The <name> tool returned: <result>.`` for each, the result cut at 200 characters;
- any other user message: ``Offline model. You said: <message>``.

A request's options (``ModelOptions``) are honoured as a model would: ``max_tokens`` (capped by the
configuration's) keeps that many words and ends with finish reason ``length``; ``stop`` cuts the
reply before the first stop sequence; ``response_format`` ``json_object`` answers
``{"reply": <the text>}``, and ``json_schema`` answers the smallest instance of the schema, every
string the text (so a client's structured-output parsing can be tested with no model). The
sampling options change nothing: the model is deterministic.

The reply streams one word (with its trailing space) per delta. Usage counts whitespace-separated
words: every message's text for the prompt, the reply for the completion. Nothing sleeps unless
``token_delay`` (seconds between deltas) is set; a configuration's model name ending in
``@<n>ms`` (for example ``cadence-offline@40ms``) sets it to n milliseconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from orchestrators.runtime import (
    LLMDelta,
    LLMResult,
    LLMSettings,
    ModelOptions,
    ToolCall,
    Usage,
    effective_max_tokens,
)

PREAMBLE = "Offline model."
RESULT_PREVIEW_CHARS = 200
TOOL_COMMAND = re.compile(r"/tool\s+([A-Za-z0-9_.\-]+)[ \t]*(.*)", re.DOTALL)


def message_text(message: dict[str, Any]) -> str:
    """The text of a message: a string content, or the text parts of a list content."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def parse_arguments(raw: str) -> dict[str, Any]:
    """Tool arguments as a model sends them (a JSON object); anything else kept as ``_raw``."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_raw": raw}


def _tool_name(messages: list[dict[str, Any]], tool_message: dict[str, Any]) -> str:
    call_id = tool_message.get("tool_call_id")
    for message in reversed(messages):
        for call in message.get("tool_calls") or ():
            if call.get("id") == call_id:
                return str((call.get("function") or {}).get("name") or "unknown")
    return str(tool_message.get("name") or "unknown")


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= RESULT_PREVIEW_CHARS else text[: RESULT_PREVIEW_CHARS - 3] + "..."


class OfflineProvider:
    """A ChatProvider that derives its answer from the conversation (see the module docstring)."""

    def __init__(self, settings: LLMSettings | None = None, *, token_delay: float = 0.0):
        self.settings = settings
        self.token_delay = token_delay

    def answer(self, messages: list[dict[str, Any]]) -> tuple[str, tuple[ToolCall, ...]]:
        """What the model says to ``messages``: (text, tool calls)."""
        trailing_results: list[dict[str, Any]] = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            trailing_results.insert(0, message)
        if trailing_results:
            parts = [
                f"The {_tool_name(messages, m)} tool returned: {_preview(message_text(m))}."
                for m in trailing_results
            ]
            return " ".join(parts), ()

        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        text = message_text(last_user).strip() if last_user is not None else ""
        command = TOOL_COMMAND.search(text)
        if command is not None:
            name, raw = command.group(1), command.group(2).strip()
            # Deterministic id: the same conversation always yields the same call.
            digest = hashlib.sha256(f"{len(messages)}:{name}:{raw}".encode()).hexdigest()[:12]
            return "", (ToolCall(id=f"call_{digest}", name=name, arguments=parse_arguments(raw)),)
        if not text:
            return f"{PREAMBLE} You said nothing.", ()
        return f"{PREAMBLE} You said: {text}", ()

    def shaped(self, content: str, options: ModelOptions | None) -> tuple[str, str]:
        """The text as the request's options shape it: (content, finish reason)."""
        finish = "stop"
        if options is None:
            return content, finish
        if options.response_format is not None:
            content = json.dumps(_formatted(options.response_format, content))
        for stop in options.stop:
            if stop and stop in content:
                content = content[: content.index(stop)]
        limit = (
            effective_max_tokens(self.settings, options) if self.settings else options.max_tokens
        )
        words = re.split(r"(?<=\s)(?=\S)", content) if content else []
        if limit is not None and len(words) > limit:
            content, finish = "".join(words[:limit]), "length"
        return content, finish

    async def stream(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        options: ModelOptions | None = None,
    ) -> AsyncIterator[LLMDelta | LLMResult]:
        content, tool_calls = self.answer(messages)
        content, finish = self.shaped(content, options)
        for index, piece in enumerate(re.split(r"(?<=\s)(?=\S)", content) if content else ()):
            if self.token_delay and index:
                await asyncio.sleep(self.token_delay)
            yield LLMDelta(piece)
        prompt = sum(len(message_text(m).split()) for m in messages)
        yield LLMResult(
            content=content,
            tool_calls=tool_calls,
            usage=Usage(prompt_tokens=prompt, completion_tokens=len(content.split())),
            finish_reason="tool_calls" if tool_calls else finish,
        )


def _formatted(response_format: dict[str, Any], text: str) -> Any:
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return _instance(schema, schema, text)
    if response_format.get("type") == "json_object":
        return {"reply": text}
    return text


def _instance(node: Any, root: dict[str, Any], text: str, depth: int = 0) -> Any:
    """The smallest instance of a JSON Schema, strings set to ``text``: what a client can parse."""
    if not isinstance(node, dict) or depth > 20:
        return None
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _instance(target, root, text, depth + 1)
    if "const" in node:
        return node["const"]
    if node.get("enum"):
        return node["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if node.get(key):
            return _instance(node[key][0], root, text, depth + 1)
    kind = node.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = node.get("properties") or {}
        required = node.get("required", list(properties))
        return {
            name: _instance(sub, root, text, depth + 1)
            for name, sub in properties.items()
            if name in required
        }
    if kind == "array":
        minimum = node.get("minItems", 0)
        return [_instance(node.get("items", {}), root, text, depth + 1) for _ in range(minimum)]
    if kind == "string":
        return text
    if kind in ("integer", "number"):
        return node.get("minimum", 0)
    if kind == "boolean":
        return False
    return None
