"""A response's `input` as the chat-format messages the turn pipeline takes.

Message items (role user, assistant, system or developer; string content or `input_text` /
`output_text` parts), `function_call` items (the assistant's earlier calls, as the Agents SDK
resends the whole history) and `function_call_output` items (their results, as `tool`
messages). A function call follows its assistant message's text in one assistant message, as
chat completions carry it.
"""

from __future__ import annotations

import json
from typing import Any

from chat.openai import MAX_MESSAGES
from chat.openai.errors import BadRequest
from chat.openai.validation import TOOL_NAME
from chat.services import MAX_CONTENT

MAX_CALL_ID = 128
ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}


def _text_of(content: Any, where: str, *, allowed: tuple[str, ...]) -> str:
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in allowed:
                raise BadRequest(
                    f"Only text content parts ({' or '.join(allowed)}) are supported.",
                    f"{where}[{j}].type",
                    "unsupported_value" if isinstance(kind, str) else "invalid_value",
                )
            if not isinstance(part.get("text"), str):
                raise BadRequest("A text part needs a string 'text'.", f"{where}[{j}].text")
            parts.append(part["text"])
        text = "\n".join(parts)
    else:
        raise BadRequest("Content must be a string or a list of text parts.", where)
    if len(text) > MAX_CONTENT:
        raise BadRequest(f"A message's content is limited to {MAX_CONTENT} characters.", where)
    return text


def _call_id(item: dict, where: str) -> str:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id or len(call_id) > MAX_CALL_ID:
        raise BadRequest(
            f"'call_id' must be a string of 1-{MAX_CALL_ID} characters.", f"{where}.call_id"
        )
    return call_id


def input_items(raw: Any) -> list[dict[str, Any]]:
    """The input as chat-format messages, or BadRequest naming the item."""
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'input' must be a string or a non-empty list of input items.", "input")
    if len(raw) > MAX_MESSAGES:
        raise BadRequest(f"At most {MAX_MESSAGES} input items are accepted.", "input")
    items: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest("Each input item must be an object.", where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in ROLES:
                raise BadRequest(
                    f"Unknown role {role!r}: use one of {', '.join(ROLES)}.", f"{where}.role"
                )
            # An assistant's earlier text comes back as output_text, everyone else's as input_text.
            allowed = ("output_text",) if role == "assistant" else ("input_text",)
            if "content" not in item:
                raise BadRequest("A message needs 'content'.", f"{where}.content")
            text = _text_of(item["content"], f"{where}.content", allowed=allowed)
            items.append({"role": ROLES[role], "content": text})
        elif kind == "function_call":
            name = item.get("name")
            if not isinstance(name, str) or not TOOL_NAME.match(name):
                raise BadRequest(
                    "A function name is 1-64 letters, digits, '_' or '-'.", f"{where}.name"
                )
            arguments = item.get("arguments")
            if not isinstance(arguments, str):
                raise BadRequest("'arguments' must be a JSON string.", f"{where}.arguments")
            call = {
                "id": _call_id(item, where),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            last = items[-1] if items else None
            if last is not None and last["role"] == "assistant":  # calls after its text
                last.setdefault("tool_calls", []).append(call)
                last["content"] = last["content"] or None
            else:
                items.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = (
                output
                if isinstance(output, str)
                else _text_of(output, f"{where}.output", allowed=("input_text",))
            )
            if len(text) > MAX_CONTENT:
                raise BadRequest(f"An output is limited to {MAX_CONTENT} characters.", where)
            items.append({"role": "tool", "tool_call_id": _call_id(item, where), "content": text})
        elif isinstance(kind, str):
            raise BadRequest(
                f"Input items of type {kind!r} are not supported: use messages, function_call "
                "and function_call_output items.",
                f"{where}.type",
                "unsupported_value",
            )
        else:
            raise BadRequest("An input item's 'type' must be a string.", f"{where}.type")
    last = items[-1]
    if last["role"] not in ("user", "tool"):
        raise BadRequest(
            "The input must end with a user message or function_call_output items.",
            f"input[{len(raw) - 1}]",
        )
    if last["role"] == "user" and not last["content"].strip():
        raise BadRequest("The user's message needs non-empty content.", f"input[{len(raw) - 1}]")
    return items


def check_outputs(history: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    """Every function_call_output answers a call made earlier (in `history` or the input), and
    every call is answered before the conversation goes on, as OpenAI requires."""
    calls: list[str] = []
    answered: set[str] = set()
    for message in (*history, *items):
        if message["role"] == "tool":
            if message["tool_call_id"] not in calls:
                raise BadRequest(
                    "No tool call found for function call output with call_id "
                    f"{message['tool_call_id']}.",
                    "input",
                )
            answered.add(message["tool_call_id"])
        elif message["role"] in ("user", "assistant"):
            waiting = [call for call in calls if call not in answered]
            if waiting:
                raise BadRequest(f"No tool output found for function call {waiting[0]}.", "input")
        calls += [call["id"] for call in message.get("tool_calls") or ()]


def arguments_text(arguments: Any) -> str:
    """A call's arguments as the JSON string OpenAI sends."""
    return arguments if isinstance(arguments, str) else json.dumps(arguments)
