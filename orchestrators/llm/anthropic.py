"""Anthropic's Messages API as a ChatProvider (needs the optional ``anthropic`` package).

Conversations arrive in the OpenAI chat format that every other part of Cadence speaks, so this
module translates both ways: system messages become the ``system`` parameter, assistant tool calls
become ``tool_use`` blocks, ``tool`` messages become ``tool_result`` blocks in a user turn, and tool
declarations become ``input_schema`` tools. Retries, the circuit breaker, timeouts and error codes
are the OpenAI-compatible provider's (the two SDKs share their error types' shapes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx

from orchestrators.llm.offline import message_text, parse_arguments
from orchestrators.llm.openai_compatible import OpenAICompatibleProvider
from orchestrators.runtime import (
    LLMDelta,
    LLMError,
    LLMResult,
    LLMSettings,
    ModelOptions,
    ToolCall,
    Usage,
    effective_max_tokens,
    effective_temperature,
)

DEFAULT_MAX_TOKENS = 1024  # the API requires a value; a chat reply rarely needs more
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
}


def to_anthropic(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """OpenAI-format messages and tools as Messages API arguments (system, messages, tools)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []

    def append(role: str, blocks: list[dict[str, Any]]) -> None:
        # The API wants user and assistant turns to alternate: merge neighbours of one role.
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for message in messages:
        role = message.get("role")
        text = message_text(message)
        if role == "system":
            if text:
                system.append(text)
        elif role == "tool":
            append(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": message.get("tool_call_id", ""),
                        "content": text,
                    }
                ],
            )
        elif role == "assistant":
            blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                arguments = function.get("arguments") or "{}"
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id", ""),
                        "name": function.get("name", ""),
                        "input": parse_arguments(arguments)
                        if isinstance(arguments, str)
                        else arguments,
                    }
                )
            if blocks:
                append("assistant", blocks)
        elif text:
            append("user", [{"type": "text", "text": text}])

    arguments: dict[str, Any] = {"messages": out}
    if system:
        arguments["system"] = "\n\n".join(system)
    if tools:
        arguments["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object"},
            }
            for t in tools
            if t.get("type") == "function"
        ]
    return arguments


class AnthropicProvider(OpenAICompatibleProvider):
    default_base_url = "https://api.anthropic.com"

    def __init__(self, settings: LLMSettings, **kwargs: Any):
        import anthropic  # optional: provider_for checks it is installed before building this

        self._sdk = anthropic
        self.status_error = anthropic.APIStatusError
        self.timeout_error = anthropic.APITimeoutError
        self.connection_error = anthropic.APIConnectionError
        self.api_error = anthropic.APIError
        super().__init__(settings, **kwargs)

    def _make_client(self, http: httpx.AsyncClient, base_url: str) -> Any:
        return self._sdk.AsyncAnthropic(
            base_url=base_url,
            api_key=self.settings.api_key,
            http_client=http,
            max_retries=0,
            timeout=self.settings.timeout,
        )

    def check_options(self, options: ModelOptions | None) -> None:
        if options is None:
            return
        for name in (
            "response_format",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "tool_choice",
        ):
            if getattr(options, name) is not None:
                raise LLMError(
                    f"The anthropic provider does not support {name!r}.",
                    "unsupported_parameter",
                    400,
                )

    def _request(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        options: ModelOptions | None = None,
    ) -> dict[str, Any]:
        s = self.settings
        kwargs = to_anthropic(messages, tools)
        max_tokens = effective_max_tokens(s, options) or DEFAULT_MAX_TOKENS
        kwargs.update(model=s.model, max_tokens=max_tokens, stream=True)
        temperature = effective_temperature(s, options)
        if temperature is not None:
            kwargs["temperature"] = min(temperature, 1.0)  # Anthropic's range is 0-1
        if options is not None and options.top_p is not None:
            kwargs["top_p"] = options.top_p
        if options is not None and options.stop:
            kwargs["stop_sequences"] = list(options.stop)
        return kwargs

    async def _once(
        self,
        client: Any,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        options: ModelOptions | None = None,
    ) -> AsyncIterator[LLMDelta | LLMResult]:
        limit = self.settings.timeout
        async with asyncio.timeout(limit):
            stream = await client.messages.create(**self._request(messages, tools, options))
        parts: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        prompt = completion = 0
        stop_reason = None
        try:
            while True:
                try:
                    async with asyncio.timeout(limit):
                        event = await stream.__anext__()
                except StopAsyncIteration:
                    break
                kind = event.type
                if kind == "message_start":
                    prompt = event.message.usage.input_tokens or 0
                elif kind == "content_block_start" and event.content_block.type == "tool_use":
                    block = event.content_block
                    calls[event.index] = {"id": block.id, "name": block.name, "arguments": []}
                elif kind == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta" and delta.text:
                        parts.append(delta.text)
                        yield LLMDelta(delta.text)
                    elif delta.type == "input_json_delta" and event.index in calls:
                        calls[event.index]["arguments"].append(delta.partial_json)
                elif kind == "message_delta":
                    stop_reason = event.delta.stop_reason or stop_reason
                    completion = event.usage.output_tokens or completion
        finally:
            await stream.close()
        tool_calls = tuple(
            ToolCall(c["id"], c["name"], parse_arguments("".join(c["arguments"])))
            for _, c in sorted(calls.items())
        )
        finish = FINISH_REASONS.get(stop_reason or "", "tool_calls" if tool_calls else "stop")
        yield LLMResult("".join(parts), tool_calls, Usage(prompt, completion), finish)
