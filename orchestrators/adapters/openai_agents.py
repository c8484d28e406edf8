"""The OpenAI Agents SDK adapter: an `Agent` with the instance's tools, run by the SDK's `Runner`.

The model is the SDK's chat-completions model on an `AsyncOpenAI` client built from the instance's
LLM configuration (so any OpenAI-compatible server works), sending through Cadence's one outbound
client. The SDK's tracing is switched off: its exporter would post every run to OpenAI's servers,
past the egress policy and with an organization's prompts in it.

The SDK is an extra (requirements-extras.txt): nothing here imports it at module import time, and
`available()` says whether it is installed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from orchestrators.adapters.langgraph import (
    DEFAULT_BASE_URL,
    STEP_LIMIT_REPLY,
    PerLoop,
    llm_error,
    outbound_http_client,
    require_openai_compatible,
)
from orchestrators.runtime import (
    FinalEvent,
    LLMError,
    RunContext,
    RuntimeConfig,
    RuntimeEvent,
    StepEvent,
    TokenEvent,
    Tool,
    ToolCallEvent,
    ToolContext,
    ToolResultEvent,
    Usage,
)

# Roles the SDK takes as plain input messages; anything else in a stored history (tool messages of
# an earlier turn) is left out rather than replayed without the call it answered.
_INPUT_ROLES = frozenset({"user", "assistant", "system", "developer"})


@dataclass(slots=True)
class _Call:
    """The SDK's run context for one stream() call: what the tools need, what they report back."""

    tool_context: ToolContext
    outcomes: dict[str, tuple[Any, str | None]] = field(
        default_factory=dict
    )  # call id → (result, error)


def _function_tool(tool: Tool) -> Any:
    """An SDK FunctionTool from a runtime Tool: its JSON schema as is, its async fn."""
    from agents import FunctionTool

    async def invoke(ctx: Any, arguments: str) -> str:
        call: _Call = ctx.context
        error: str | None = None
        try:
            parsed = json.loads(arguments or "{}")
            output = await tool.fn(parsed if isinstance(parsed, dict) else {}, call.tool_context)
        except Exception as exc:  # a tool's failure is the model's to handle, not the run's
            output, error = {"error": f"{type(exc).__name__}: {exc}"}, str(exc)
        # The model reads the text; the stream reports the raw value, found again by call id.
        call.outcomes[ctx.tool_call_id] = (output, error)
        return output if isinstance(output, str) else json.dumps(output, default=str)

    return FunctionTool(
        name=tool.name,
        description=tool.description,
        params_json_schema=tool.parameters,
        on_invoke_tool=invoke,
        # Strict mode rewrites the schema (every property required, no extra keys); the tools'
        # schemas are sent as their authors wrote them, as the other adapters do.
        strict_json_schema=False,
    )


@dataclass(slots=True)
class _Turn:
    number: int
    t0: float


class OpenAIAgentsRuntime:
    def __init__(self, config: RuntimeConfig) -> None:
        from agents import Agent, ModelSettings, set_tracing_disabled

        require_openai_compatible(config, OpenAIAgentsAdapter.name)
        # Process-wide and idempotent; each run also says so in its RunConfig.
        set_tracing_disabled(True)
        self.config = config
        self._models: PerLoop[Any] = PerLoop(self._make_model)
        self.agent = Agent(
            name=config.slug or "cadence",
            instructions=config.system_prompt or None,
            tools=[_function_tool(tool) for tool in config.tools],
            model_settings=ModelSettings(
                temperature=config.llm.temperature,
                max_tokens=config.llm.max_tokens,
                # The SDK asks for usage only from api.openai.com; other servers send it when asked.
                include_usage=True,
                # The SDK asks api.openai.com to store every completion; an organization's
                # conversations are not ours to keep there. Other servers get no such field.
                store=False
                if "api.openai.com" in (config.llm.base_url or DEFAULT_BASE_URL)
                else None,
            ),
        )

    def _make_model(self) -> Any:
        from agents import OpenAIChatCompletionsModel
        from openai import AsyncOpenAI

        llm = self.config.llm
        client = AsyncOpenAI(
            base_url=llm.base_url or DEFAULT_BASE_URL,
            # Never None: the client would read OPENAI_API_KEY from the environment.
            api_key=llm.api_key or "unused",
            timeout=llm.timeout,
            max_retries=llm.max_retries,
            http_client=outbound_http_client(llm.timeout),
        )
        return OpenAIChatCompletionsModel(model=llm.model, openai_client=client)

    def _input(self, history: list[dict[str, Any]], message: str) -> list[dict[str, Any]]:
        items = [
            {"role": m["role"], "content": m.get("content") or ""}
            for m in history
            if m.get("role") in _INPUT_ROLES and isinstance(m.get("content") or "", str)
        ]
        return [*items, {"role": "user", "content": message}]

    async def stream(
        self, history: list[dict[str, Any]], message: str, context: RunContext
    ) -> AsyncIterator[RuntimeEvent]:
        from agents import MaxTurnsExceeded, ModelBehaviorError, RunConfig, Runner

        call = _Call(ToolContext(org_slug=context.org_slug, run_id=context.run_id))
        began = time.perf_counter()
        # The model per event loop rides in the RunConfig, which overrides the agent's for this run
        # only: the agent itself stays shared by every call.
        result = Runner.run_streamed(
            self.agent,
            input=self._input(history, message),
            context=call,
            max_turns=max(1, self.config.max_steps),
            run_config=RunConfig(
                model=self._models.get(),
                tracing_disabled=True,
                workflow_name=self.config.slug or "cadence",
            ),
        )
        turn: _Turn | None = None
        turns = 0
        names: dict[str, str] = {}  # call id → tool name: a tool output's raw item names no tool
        content, finish_reason = "", "stop"
        try:
            async for event in result.stream_events():
                if event.type == "raw_response_event":
                    kind = getattr(event.data, "type", "")
                    if (
                        kind == "response.created"
                    ):  # the model's turn begins; the previous one ended
                        if turn is not None:
                            yield StepEvent(
                                "turn", "completed", _ms(turn.t0), {"turn": turn.number}
                            )
                        turns += 1
                        turn = _Turn(turns, time.perf_counter())
                        yield StepEvent("turn", "started", detail={"turn": turns})
                    elif kind == "response.output_text.delta" and event.data.delta:
                        yield TokenEvent(event.data.delta)
                elif event.type == "run_item_stream_event":
                    if event.name == "tool_called":
                        raw = event.item.raw_item
                        call_id, name = _field(raw, "call_id"), _field(raw, "name")
                        names[call_id] = name
                        yield ToolCallEvent(call_id, name, _arguments(_field(raw, "arguments")))
                    elif event.name == "tool_output":
                        raw = event.item.raw_item
                        call_id = _field(raw, "call_id")
                        output, error = call.outcomes.pop(call_id, (event.item.output, None))
                        yield ToolResultEvent(call_id, names.get(call_id, ""), output, error)
            content = str(result.final_output or "")
        except MaxTurnsExceeded:
            content, finish_reason = STEP_LIMIT_REPLY, "max_steps"
        except Exception as exc:
            if turn is not None:
                yield StepEvent(
                    "turn",
                    "failed",
                    _ms(turn.t0),
                    {"turn": turn.number, "error": type(exc).__name__},
                )
                turn = None
            error = llm_error(exc, self.config.llm)
            if error is None and isinstance(exc, ModelBehaviorError):
                error = LLMError(str(exc), "llm_protocol_error")
            if error is None:
                raise
            raise error from exc
        finally:
            if not result.is_complete:
                # The consumer went away: stop the SDK's background run (and its tools).
                result.cancel()
        if turn is not None:
            yield StepEvent("turn", "completed", _ms(turn.t0), {"turn": turn.number})
        usage = result.context_wrapper.usage
        yield StepEvent("run", "completed", _ms(began), {"turns": turns})
        yield FinalEvent(
            content, Usage(usage.input_tokens or 0, usage.output_tokens or 0), finish_reason
        )


def _field(raw: Any, name: str) -> str:
    value = raw.get(name) if isinstance(raw, dict) else getattr(raw, name, None)
    return str(value or "")


def _arguments(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text or "{}")
    except ValueError:
        return {"_raw": text}  # the model's malformed JSON, kept for whoever reads the event
    return parsed if isinstance(parsed, dict) else {"_raw": parsed}


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


class OpenAIAgentsAdapter:
    name = "openai_agents"

    def available(self) -> bool:
        # "agents" is a common name: the distribution says it is the OpenAI Agents SDK.
        if importlib.util.find_spec("agents") is None:
            return False
        try:
            importlib.metadata.distribution("openai-agents")
        except importlib.metadata.PackageNotFoundError:
            return False
        return True

    def build(self, config: RuntimeConfig) -> OpenAIAgentsRuntime:
        return OpenAIAgentsRuntime(config)
