"""A built-in model that needs no network: deterministic replies for demos and tests.

What it answers, from the last message of the conversation:

- a user message containing ``/tool <name> <json-args>`` (for example
  ``please /tool calculator {"expression": "2*(3+4)"}``): a call of tool ``<name>`` with those
  arguments (``{}`` when none are given; arguments that are not a JSON object become
  ``{"_raw": "<text>"}``, as with a real model), no text, finish reason ``tool_calls``;
- one or more ``tool`` messages (results of the calls it asked for):
  ``The <name> tool returned: <result>.`` for each, the result cut at 200 characters;
- any other user message: ``Offline model. You said: <message>``.

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

from orchestrators.runtime import LLMDelta, LLMResult, LLMSettings, ToolCall, Usage

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

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> AsyncIterator[LLMDelta | LLMResult]:
        content, tool_calls = self.answer(messages)
        for index, piece in enumerate(re.split(r"(?<=\s)(?=\S)", content) if content else ()):
            if self.token_delay and index:
                await asyncio.sleep(self.token_delay)
            yield LLMDelta(piece)
        prompt = sum(len(message_text(m).split()) for m in messages)
        yield LLMResult(
            content=content,
            tool_calls=tool_calls,
            usage=Usage(prompt_tokens=prompt, completion_tokens=len(content.split())),
            finish_reason="tool_calls" if tool_calls else "stop",
        )
