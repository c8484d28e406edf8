"""A chat.completions request checked in full before anything runs: a 400 naming the parameter."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from chat.openai import MAX_MESSAGES, ROLES
from chat.openai.errors import BadRequest
from chat.services import MAX_CONTENT

logger = logging.getLogger(__name__)

# --- request validation ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str
    history: list[dict[str, str]]
    message: str
    stream: bool
    include_usage: bool
    conversation_id: str | None


def _text(content: Any, where: str, *, nullable: bool) -> str:
    if content is None and nullable:
        return ""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise BadRequest(
                    "Only text content parts ({'type': 'text', 'text': ...}) are supported.",
                    f"{where}[{j}]",
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


def parse_completion_request(body: Any) -> CompletionRequest:
    """The request as Cadence runs it, or BadRequest naming the offending parameter."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' is required: the slug of one of your orchestrators.", "model")

    stream = body.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean.", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object.", "stream_options")
    include_usage = (options or {}).get("include_usage", False)
    if include_usage is None:
        include_usage = False
    if not isinstance(include_usage, bool):
        raise BadRequest("'include_usage' must be a boolean.", "stream_options.include_usage")

    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise BadRequest("Only one choice per request is supported: 'n' must be 1.", "n")
    for name in ("tools", "functions"):
        if body.get(name):
            raise BadRequest(
                f"'{name}' is not supported: an orchestrator's tools are configured on the server "
                "and run there.",
                name,
            )

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list.", "messages")
    if len(messages) > MAX_MESSAGES:
        raise BadRequest(f"At most {MAX_MESSAGES} messages are accepted.", "messages")
    converted: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest("Each message must be an object.", where)
        role = message.get("role")
        if role in ("tool", "function"):
            raise BadRequest(
                f"'{role}' messages are not supported: tools run inside the orchestrator.",
                f"{where}.role",
            )
        if not isinstance(role, str) or role not in ROLES:  # a list or an object is unhashable
            raise BadRequest(
                f"Unknown role {role!r}: use one of {', '.join(ROLES)}.", f"{where}.role"
            )
        if role == "assistant" and message.get("tool_calls"):
            raise BadRequest(
                "Assistant messages with tool_calls are not supported.", f"{where}.tool_calls"
            )
        if "content" not in message and role != "assistant":
            raise BadRequest("A message needs 'content'.", f"{where}.content")
        text = _text(message.get("content"), f"{where}.content", nullable=role == "assistant")
        converted.append({"role": ROLES[role], "content": text})
    last = converted[-1]
    if messages[-1].get("role") != "user":
        raise BadRequest(
            "The last message must be the user's.", f"messages[{len(messages) - 1}].role"
        )
    if not last["content"].strip():
        raise BadRequest(
            "The user's message needs non-empty content.",
            f"messages[{len(messages) - 1}].content",
        )
    # An empty assistant turn (a reply that was only tool calls) tells the model nothing.
    history = [m for m in converted[:-1] if m["content"] or m["role"] != "assistant"]

    extension = body.get("cadence")
    conversation_id = None
    if extension is not None:
        if not isinstance(extension, dict):
            raise BadRequest("'cadence' must be an object.", "cadence")
        unknown = sorted(set(extension) - {"conversation_id"})
        if unknown:
            raise BadRequest(f"Unknown fields in 'cadence': {unknown}.", "cadence")
        raw = extension.get("conversation_id")
        if raw is not None:
            try:
                conversation_id = str(uuid.UUID(str(raw))) if isinstance(raw, str) else None
            except ValueError:
                conversation_id = None
            if conversation_id is None:
                raise BadRequest(
                    "'cadence.conversation_id' must be a conversation's UUID.",
                    "cadence.conversation_id",
                )
    return CompletionRequest(
        model=model.strip(),
        history=history,
        message=last["content"],
        stream=stream,
        include_usage=include_usage,
        conversation_id=conversation_id,
    )
