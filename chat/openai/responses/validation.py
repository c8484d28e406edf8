"""A `POST /v1/responses` request checked in full before anything runs, as OpenAI checks it.

The same rules as chat completions (`chat/openai/validation.py`, whose helpers this reuses):
OpenAI's ranges and types, a parameter OpenAI does not have is refused ("Unrecognized request
argument supplied"), one Cadence cannot honour is refused unless null or neutral, each a 400
naming `param`. `input` becomes the chat-format messages the turn pipeline takes (`items.py`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from chat.openai.errors import BadRequest
from chat.openai.responses.items import input_items
from chat.openai.validation import (
    MAX_TOOLS,
    TOOL_NAME,
    _boolean,
    _integer,
    _invalid,
    _number,
    _recorded,
)
from chat.services import MAX_CONTENT

logger = logging.getLogger(__name__)

RESPONSE_ID = re.compile(r"^resp_([0-9a-f]{32})$")
MIN_OUTPUT_TOKENS = 16  # OpenAI's minimum for max_output_tokens
# Parameters OpenAI has that Cadence cannot honour: refused unless null (or their neutral value).
UNSUPPORTED = {
    "background": False,
    "background_options": None,
    "conversation": None,
    "context_management": None,
    "include": [],
    "max_tool_calls": None,
    "prompt": None,
    "reasoning": None,
    "top_logprobs": None,
    "truncation": "disabled",
    "moderation": None,
    "image": None,
    "access_programs": None,
}
# Accepted as OpenAI documents them, but they change nothing here.
INFORMATIONAL = (
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "safety_identifier",
    "service_tier",
)
HONOURED = (
    "model",
    "input",
    "instructions",
    "previous_response_id",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "max_output_tokens",
    "text",
    "stream",
    "stream_options",
    "store",
    "metadata",
    "user",
)
KNOWN = frozenset(HONOURED) | frozenset(UNSUPPORTED) | frozenset(INFORMATIONAL)


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    model: str
    # The new input as chat-format messages (user, system, assistant with tool_calls, tool).
    items: list[dict[str, Any]]
    instructions: str | None
    previous_response_id: str | None  # the stored response's UUID (hex), not its `resp_` id
    previous_public_id: str | None  # as the client sent it, for messages
    stream: bool
    store: bool
    parameters: dict[str, Any] = field(default_factory=dict)  # orchestrators.runtime.ModelOptions
    tools: list[dict[str, Any]] = field(default_factory=list)  # chat format, for the pipeline
    echo: dict[str, Any] = field(default_factory=dict)  # request fields the response repeats
    recorded: dict[str, Any] = field(default_factory=dict)  # user, metadata

    @property
    def continues_tools(self) -> bool:
        """Whether the input ends with tool results (the turn continues from them, no new
        user message)."""
        return self.items[-1]["role"] == "tool"


def _tools(body: dict) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The client's function tools: (chat format for the pipeline, as the response echoes them)."""
    tools = body.get("tools")
    if tools is None:
        return [], []
    if not isinstance(tools, list):
        raise _invalid("tools", "expected an array of tools.", "invalid_type")
    if len(tools) > MAX_TOOLS:
        raise _invalid("tools", f"at most {MAX_TOOLS} tools.", "array_above_max_length")
    chat, echo, names = [], [], set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise BadRequest(
                "Only function tools ({'type': 'function', 'name': ...}) are supported.",
                f"{where}.type",
                "unsupported_value" if isinstance(kind, str) else "invalid_value",
            )
        unknown = sorted(
            set(tool) - {"type", "name", "description", "parameters", "strict", "defer_loading"}
        )
        if unknown:
            raise BadRequest(
                f"Unrecognized field in a function tool: {unknown[0]}",
                f"{where}.{unknown[0]}",
                "unknown_parameter",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise BadRequest(
                "A function name is 1-64 letters, digits, '_' or '-'.", f"{where}.name"
            )
        if name in names:
            raise BadRequest(f"The function {name!r} is declared twice.", f"{where}.name")
        names.add(name)
        parameters = tool.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise BadRequest("'parameters' must be a JSON Schema object.", f"{where}.parameters")
        description = tool.get("description") or ""
        if not isinstance(description, str):
            raise BadRequest("'description' must be a string.", f"{where}.description")
        strict = tool.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise BadRequest("'strict' must be a boolean.", f"{where}.strict", "invalid_type")
        spec = {"name": name, "description": description, "parameters": parameters}
        if strict is not None:
            spec["strict"] = strict
        chat.append({"type": "function", "function": spec})
        echo.append(
            {
                "type": "function",
                "name": name,
                "description": description or None,
                "parameters": parameters,
                "strict": strict if strict is not None else True,
            }
        )
    return chat, echo


def _tool_choice(body: dict, names: set[str]) -> Any:
    choice = body.get("tool_choice")
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("name"), str)
        and choice["name"] in names
    ):
        return {"type": "function", "name": choice["name"]}
    raise _invalid(
        "tool_choice",
        "expected 'none', 'auto', 'required' or {'type': 'function', 'name': <a declared function>}.",
    )


def _text_format(body: dict) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """`text.format` as the pipeline's response_format, and as the response echoes it."""
    text = body.get("text")
    if text is None:
        return None, {"type": "text"}
    if not isinstance(text, dict):
        raise _invalid("text", "expected an object.", "invalid_type")
    unknown = sorted(set(text) - {"format", "verbosity"})
    if unknown:
        raise BadRequest(
            f"Unrecognized request argument supplied: text.{unknown[0]}",
            f"text.{unknown[0]}",
            "unknown_parameter",
        )
    if text.get("verbosity") not in (None, "medium"):
        raise BadRequest(
            "'text.verbosity' is not supported by Cadence.",
            "text.verbosity",
            "unsupported_parameter",
        )
    value = text.get("format")
    if value is None:
        return None, {"type": "text"}
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise _invalid("text.format", "type must be 'text', 'json_object' or 'json_schema'.")
    if kind == "text":
        return None, {"type": "text"}
    if kind == "json_object":
        return {"type": "json_object"}, {"type": "json_object"}
    name = value.get("name")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise BadRequest(
            "A json_schema format needs a 'name' of 1-64 letters, digits, '_' or '-'.",
            "text.format.name",
        )
    schema = value.get("schema")
    if not isinstance(schema, dict):
        raise BadRequest("'schema' must be a JSON Schema object.", "text.format.schema")
    checked: dict[str, Any] = {"name": name, "schema": schema}
    strict = value.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            raise BadRequest("'strict' must be a boolean.", "text.format.strict", "invalid_type")
        checked["strict"] = strict
    description = value.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise BadRequest("'description' must be a string.", "text.format.description")
        checked["description"] = description
    echo = {"type": "json_schema", **checked}
    return {"type": "json_schema", "json_schema": checked}, echo


def _refuse_unsupported(body: dict) -> None:
    for name, neutral in UNSUPPORTED.items():
        value = body.get(name)
        if value is not None and value != neutral:
            raise BadRequest(
                f"'{name}' is not supported by Cadence.", name, "unsupported_parameter"
            )


def _previous(body: dict) -> tuple[str | None, str | None]:
    value = body.get("previous_response_id")
    if value is None:
        return None, None
    if not isinstance(value, str):
        raise _invalid(
            "previous_response_id", f"expected a string, but got {value!r} instead.", "invalid_type"
        )
    match = RESPONSE_ID.match(value)
    # A well-formed id that is nobody's and a malformed one are the same "not found".
    return (match.group(1) if match else ""), value


def parse_responses_request(body: Any) -> ResponsesRequest:
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
    store = _boolean(body, "store")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict) or set(options) - {"include_obfuscation"}:
            raise BadRequest(
                "'stream_options' may only hold 'include_obfuscation'.", "stream_options"
            )
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _invalid("instructions", "expected a string.", "invalid_type")
        if len(instructions) > MAX_CONTENT:
            raise _invalid(
                "instructions", f"at most {MAX_CONTENT} characters.", "string_above_max_length"
            )

    parameters: dict[str, Any] = {}
    for name, low, high in (("temperature", 0, 2), ("top_p", 0, 1)):
        value = _number(body, name, low, high)
        if value is not None:
            parameters[name] = value
    max_output = _integer(body, "max_output_tokens", MIN_OUTPUT_TOKENS)
    if max_output is not None:
        parameters["max_tokens"] = max_output
    response_format, format_echo = _text_format(body)
    if response_format is not None:
        parameters["response_format"] = response_format
    parallel = _boolean(body, "parallel_tool_calls")
    tools, tools_echo = _tools(body)
    choice = _tool_choice(body, {t["function"]["name"] for t in tools})
    if choice == "none":
        tools = []  # the model may not call them: they are not offered
    elif isinstance(choice, dict) and tools:
        parameters["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice == "required" and tools:
        parameters["tool_choice"] = "required"

    previous_id, previous_public = _previous(body)
    items = input_items(body.get("input"))
    recorded = _recorded(body)
    return ResponsesRequest(
        model=model.strip(),
        items=items,
        instructions=instructions,
        previous_response_id=previous_id,
        previous_public_id=previous_public,
        stream=stream,
        store=store is not False,
        parameters=parameters,
        tools=tools,
        echo={
            "instructions": instructions,
            "max_output_tokens": max_output,
            "parallel_tool_calls": parallel is not False,
            "temperature": parameters.get("temperature", 1.0),
            "top_p": parameters.get("top_p", 1.0),
            "text": {"format": format_echo},
            "tool_choice": choice or "auto",
            "tools": tools_echo,
            "user": recorded.get("user"),
            "metadata": recorded.get("metadata") or {},
            "store": store is not False,
        },
        recorded=recorded,
    )
