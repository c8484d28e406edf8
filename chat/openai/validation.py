"""A chat.completions request checked in full before anything runs, as OpenAI checks it.

Every parameter of OpenAI's chat.completions API is known here. Those Cadence honours are
validated with OpenAI's ranges and types; those it cannot honour (audio, logprobs, logit_bias,
predictions, web search, the deprecated `functions`) are refused when set, and a parameter
OpenAI does not have is refused too ("Unrecognized request argument supplied"), each as a 400
in OpenAI's shape with `param` naming it. `null` means "not given", as OpenAI's SDKs send it.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from chat.openai import MAX_MESSAGES, ROLES
from chat.openai.errors import BadRequest
from chat.services import MAX_CONTENT

logger = logging.getLogger(__name__)

MAX_TOOLS = 128
MAX_STOP = 4
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Parameters OpenAI has that Cadence cannot honour: refused unless null (or their neutral value).
UNSUPPORTED = {
    "audio": None,
    "functions": None,
    "function_call": None,
    "logit_bias": {},
    "logprobs": False,
    "top_logprobs": None,
    "prediction": None,
    "web_search_options": None,
    "reasoning_effort": None,
    "verbosity": None,
}
# Accepted as OpenAI documents them and recorded, but they change nothing here.
INFORMATIONAL = ("store", "prompt_cache_key", "safety_identifier", "service_tier")
HONOURED = (
    "model",
    "messages",
    "stream",
    "stream_options",
    "n",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "metadata",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "modalities",
    "cadence",
)
KNOWN = frozenset(HONOURED) | frozenset(UNSUPPORTED) | frozenset(INFORMATIONAL)


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str
    history: list[dict[str, Any]]
    message: str  # the user's message; "" when the request answers tool calls
    stream: bool
    include_usage: bool
    conversation_id: str | None
    parameters: dict[str, Any] = field(default_factory=dict)  # orchestrators.runtime.ModelOptions
    tools: list[dict[str, Any]] = field(default_factory=list)  # the client's own
    recorded: dict[str, Any] = field(default_factory=dict)  # user, metadata: for the run


def _invalid(name: str, message: str, code: str = "invalid_value") -> BadRequest:
    return BadRequest(f"Invalid '{name}': {message}", name, code)


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(name, f"expected a number, but got {value!r} instead.", "invalid_type")
    if value < low:
        raise _invalid(
            name,
            f"decimal below minimum value. Expected a value >= {low:g}, but got {value} instead.",
            "decimal_below_min_value",
        )
    if value > high:
        raise _invalid(
            name,
            f"decimal above maximum value. Expected a value <= {high:g}, but got {value} instead.",
            "decimal_above_max_value",
        )
    return float(value)


def _integer(body: dict, name: str, low: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(name, f"expected an integer, but got {value!r} instead.", "invalid_type")
    if low is not None and value < low:
        raise _invalid(
            name,
            f"integer below minimum value. Expected a value >= {low}, but got {value} instead.",
            "integer_below_min_value",
        )
    return value


def _boolean(body: dict, name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise _invalid(name, f"expected a boolean, but got {value!r} instead.", "invalid_type")
    return value


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


def _tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise BadRequest("'tool_calls' must be a list.", where)
    checked = []
    for j, call in enumerate(calls):
        at = f"{where}[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(function, dict)
            or not isinstance(call.get("id"), str)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments", ""), str)
        ):
            raise BadRequest(
                "A tool call needs an 'id' and a 'function' with a 'name' and string 'arguments'.",
                at,
            )
        checked.append(
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": function["name"], "arguments": function.get("arguments", "")},
            }
        )
    return checked


def _messages(body: dict) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list.", "messages")
    if len(messages) > MAX_MESSAGES:
        raise BadRequest(f"At most {MAX_MESSAGES} messages are accepted.", "messages")
    converted: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest("Each message must be an object.", where)
        role = message.get("role")
        if role == "function":
            raise BadRequest(
                "'function' messages are deprecated: use 'tool' messages.", f"{where}.role"
            )
        # A list or an object is unhashable: checked as a string first.
        if not isinstance(role, str) or (role not in ROLES and role != "tool"):
            raise BadRequest(
                f"Unknown role {role!r}: use one of {', '.join([*ROLES, 'tool'])}.",
                f"{where}.role",
            )
        if "content" not in message and role not in ("assistant",):
            raise BadRequest("A message needs 'content'.", f"{where}.content")
        text = _text(message.get("content"), f"{where}.content", nullable=role == "assistant")
        if role == "tool":
            if not isinstance(message.get("tool_call_id"), str):
                raise BadRequest("A tool message needs 'tool_call_id'.", f"{where}.tool_call_id")
            converted.append(
                {"role": "tool", "tool_call_id": message["tool_call_id"], "content": text}
            )
            continue
        entry: dict[str, Any] = {"role": ROLES[role], "content": text}
        if role == "assistant" and message.get("tool_calls"):
            entry["tool_calls"] = _tool_calls(message["tool_calls"], f"{where}.tool_calls")
            entry["content"] = text or None
        converted.append(entry)
    last = messages[-1].get("role")
    if last not in ("user", "tool"):
        raise BadRequest(
            "The last message must be the user's (or the results of the tools you called).",
            f"messages[{len(messages) - 1}].role",
        )
    if last == "user" and not converted[-1]["content"].strip():
        raise BadRequest(
            "The user's message needs non-empty content.",
            f"messages[{len(messages) - 1}].content",
        )
    return converted


def _tools(body: dict) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _invalid("tools", "expected an array of tools.", "invalid_type")
    if len(tools) > MAX_TOOLS:
        raise _invalid("tools", f"at most {MAX_TOOLS} tools.", "array_above_max_length")
    checked, names = [], set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise BadRequest("Only function tools ({'type': 'function', ...}).", f"{where}.type")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise BadRequest("A tool needs a 'function' object.", f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise BadRequest(
                "A function name is 1-64 letters, digits, '_' or '-'.", f"{where}.function.name"
            )
        if name in names:
            raise BadRequest(f"The function {name!r} is declared twice.", f"{where}.function.name")
        names.add(name)
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise BadRequest("'parameters' must be a JSON Schema object.", f"{where}.function")
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise BadRequest("'description' must be a string.", f"{where}.function.description")
        spec = {"name": name, "description": description, "parameters": parameters}
        if isinstance(function.get("strict"), bool):
            spec["strict"] = function["strict"]
        checked.append({"type": "function", "function": spec})
    return checked


def _tool_choice(body: dict, tools: list[dict[str, Any]]) -> Any:
    choice = body.get("tool_choice")
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    names = {t["function"]["name"] for t in tools}
    if (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
        and choice["function"].get("name") in names
    ):
        return {"type": "function", "function": {"name": choice["function"]["name"]}}
    raise _invalid(
        "tool_choice", "expected 'none', 'auto', 'required' or one of the declared functions."
    )


def _response_format(body: dict) -> dict[str, Any] | None:
    value = body.get("response_format")
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in (
        "text",
        "json_object",
        "json_schema",
    ):
        raise _invalid("response_format", "type must be 'text', 'json_object' or 'json_schema'.")
    if value["type"] == "text":
        return None
    if value["type"] == "json_object":
        return {"type": "json_object"}
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise BadRequest(
            "'json_schema' needs a 'name' (and a 'schema').", "response_format.json_schema"
        )
    if not TOOL_NAME.match(spec["name"]):
        raise BadRequest(
            "A schema name is 1-64 letters, digits, '_' or '-'.",
            "response_format.json_schema.name",
        )
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise BadRequest("'schema' must be a JSON Schema object.", "response_format.json_schema")
    checked = {"name": spec["name"], "schema": schema}
    if isinstance(spec.get("strict"), bool):
        checked["strict"] = spec["strict"]
    if isinstance(spec.get("description"), str):
        checked["description"] = spec["description"]
    return {"type": "json_schema", "json_schema": checked}


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if len(stop) > MAX_STOP:
            raise _invalid("stop", f"at most {MAX_STOP} sequences.", "array_above_max_length")
        return tuple(stop)
    raise _invalid("stop", "expected a string or an array of strings.", "invalid_type")


def _refuse_unsupported(body: dict) -> None:
    for name, neutral in UNSUPPORTED.items():
        value = body.get(name)
        if value is not None and value != neutral:
            raise BadRequest(
                f"'{name}' is not supported by Cadence.", name, "unsupported_parameter"
            )
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise BadRequest(
            "Only the 'text' modality is supported.", "modalities", "unsupported_value"
        )


def _recorded(body: dict) -> dict[str, Any]:
    user = body.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > 256):
        raise _invalid("user", "expected a string of at most 256 characters.", "invalid_type")
    metadata = body.get("metadata")
    if metadata is not None:
        if (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or not all(
                isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
                for k, v in metadata.items()
            )
        ):
            raise _invalid(
                "metadata",
                "expected at most 16 pairs of strings (keys up to 64, values up to 512 characters).",
            )
    for name in ("store",):
        _boolean(body, name)
    return {k: v for k, v in (("user", user), ("metadata", metadata)) if v is not None}


def _conversation(body: dict) -> str | None:
    extension = body.get("cadence")
    if extension is None:
        return None
    if not isinstance(extension, dict):
        raise BadRequest("'cadence' must be an object.", "cadence")
    unknown = sorted(set(extension) - {"conversation_id"})
    if unknown:
        raise BadRequest(f"Unknown fields in 'cadence': {unknown}.", "cadence")
    raw = extension.get("conversation_id")
    if raw is None:
        return None
    try:
        return str(uuid.UUID(raw)) if isinstance(raw, str) else _no_conversation()
    except ValueError:
        return _no_conversation()


def _no_conversation():
    raise BadRequest(
        "'cadence.conversation_id' must be a conversation's UUID.", "cadence.conversation_id"
    )


def parse_completion_request(body: Any) -> CompletionRequest:
    """The request as Cadence runs it, or BadRequest naming the offending parameter."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    for name in body:
        if name not in KNOWN:
            raise BadRequest(
                f"Unrecognized request argument supplied: {name}", name, "unknown_parameter"
            )
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' is required: the slug of one of your orchestrators.", "model")
    _refuse_unsupported(body)
    stream = bool(_boolean(body, "stream"))
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object.", "stream_options")
    include_usage = (options or {}).get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise BadRequest("'include_usage' must be a boolean.", "stream_options.include_usage")
    n = _integer(body, "n", 1)
    if n is not None and n != 1:
        raise BadRequest("Only one choice per request is supported: 'n' must be 1.", "n")

    parameters: dict[str, Any] = {}
    for name, low, high in (
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("presence_penalty", -2, 2),
        ("frequency_penalty", -2, 2),
    ):
        value = _number(body, name, low, high)
        if value is not None:
            parameters[name] = value
    limits = [
        v
        for v in (_integer(body, "max_tokens", 1), _integer(body, "max_completion_tokens", 1))
        if v
    ]
    if limits:
        parameters["max_tokens"] = min(limits)
    seed = _integer(body, "seed")
    if seed is not None:
        parameters["seed"] = seed
    stop = _stop(body)
    if stop:
        parameters["stop"] = stop
    response_format = _response_format(body)
    if response_format is not None:
        parameters["response_format"] = response_format
    _boolean(body, "parallel_tool_calls")
    tools = _tools(body)
    choice = _tool_choice(body, tools)
    if choice == "none":
        tools = []  # the model may not call them: they are not offered
    elif choice is not None and choice != "auto" and tools:
        parameters["tool_choice"] = choice

    converted = _messages(body)
    if converted[-1]["role"] == "user":
        history, message = converted[:-1], converted[-1]["content"]
    else:  # the results of the client's tools: the turn continues from them
        history, message = converted, ""
    # An empty assistant turn (a reply that was only tool calls) tells the model nothing.
    history = [
        m for m in history if m.get("content") or m["role"] != "assistant" or m.get("tool_calls")
    ]
    conversation_id = _conversation(body)
    if conversation_id is not None and not message:
        raise BadRequest(
            "A stored conversation takes user messages; send tool results without "
            "'cadence.conversation_id'.",
            "cadence.conversation_id",
        )
    return CompletionRequest(
        model=model.strip(),
        history=history,
        message=message,
        stream=stream,
        include_usage=bool(include_usage),
        conversation_id=conversation_id,
        parameters=parameters,
        tools=tools,
        recorded=_recorded(body),
    )
