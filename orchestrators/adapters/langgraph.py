"""The LangGraph adapter: a ReAct-style graph (model node ⇄ tool node) over the instance's tools.

The graph is compiled once in `build`; everything that belongs to one call (the messages, the
tool context, timings) lives in `stream`, so a built runtime serves concurrent calls. The model is
`ChatOpenAI` on the instance's LLM configuration, sending through Cadence's one outbound client
(`cadence_site.outbound`) so the egress policy holds for this framework too.

LangGraph and langchain-openai are extras (requirements-extras.txt): nothing here imports them at
module import time, and `available()` says whether they are installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from orchestrators.runtime import (
    FinalEvent,
    LLMError,
    LLMSettings,
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

# The OpenAI endpoint, written out: left empty, langchain-openai would take OPENAI_API_BASE from
# the process environment and send an organization's key wherever that points.
DEFAULT_BASE_URL = "https://api.openai.com/v1"
STEP_LIMIT_REPLY = "I stopped after reaching the step limit."

# Where a call's ToolContext travels, in the RunnableConfig the graph hands each tool.
_TOOL_CONTEXT_KEY = "cadence_tool_context"
_MODEL_NODE = "model"
_TOOLS_NODE = "tools"

# The LLM providers (orchestrators.llm) these adapters can drive: the frameworks bring their own
# OpenAI client, so a configuration for another provider cannot be honoured.
SUPPORTED_PROVIDERS = ("openai_compatible",)

T = TypeVar("T")


def require_openai_compatible(config: RuntimeConfig, framework: str) -> None:
    if config.llm.provider not in SUPPORTED_PROVIDERS:
        raise LLMError(
            f"The {framework} framework needs an OpenAI-compatible LLM configuration, not {config.llm.provider!r}.",
            "provider_not_supported",
        )


class PerLoop(Generic[T]):
    """One object per event loop, made on first use.

    An httpx client's connections belong to the loop that opened them; a runtime pooled per process
    may be streamed from more than one loop (the ASGI loop, a Celery task's `asyncio.run`), so
    each loop gets its own client, reused by every call on that loop.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        value = self._by_loop.get(loop)
        if value is None:
            value = self._by_loop[loop] = self._factory()
        return value


def outbound_http_client(timeout: float) -> Any:
    """Cadence's egress-checked httpx client, or None (the SDK's own) where that module is absent."""
    try:
        from cadence_site.outbound import async_client
    except ImportError:
        return None
    return async_client(timeout=timeout)


def llm_error(exc: BaseException, llm: LLMSettings) -> LLMError | None:
    """The runtime's LLMError for an OpenAI client failure; None for anything else.

    Codes are those of orchestrators.llm's provider, so callers treat every framework alike. The
    frameworks retried already (max_retries). Messages never carry the request, and the key is
    scrubbed from the provider's own words (some echo it back).
    """
    import openai

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if getattr(cause, "code", None) == "egress_denied":  # cadence_site.outbound.EgressDenied
            return LLMError(str(getattr(cause, "message", cause)), "egress_denied", 400)
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__

    def detail() -> str:
        text = str(getattr(exc, "message", "") or "")
        return (text.replace(llm.api_key, "***") if llm.api_key else text)[:300]

    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in (401, 403):
            return LLMError(
                f"The provider rejected the API key (HTTP {status}).", "llm_auth_failed", status
            )
        if status == 404:
            return LLMError(
                f"The provider does not know the model {llm.model!r} (HTTP 404).",
                "llm_not_found",
                404,
            )
        if status == 429:
            return LLMError(
                "The provider is rate limiting requests (HTTP 429).", "llm_rate_limited", 429
            )
        if status >= 500 or status == 408:
            return LLMError(
                f"The provider is unavailable (HTTP {status}).", "llm_unavailable", status
            )
        return LLMError(
            f"The provider refused the request (HTTP {status}): {detail()}",
            "llm_bad_request",
            status,
        )
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return LLMError(
            f"The provider did not answer within {llm.timeout:g} s.", "llm_timeout", 504
        )
    if isinstance(exc, openai.APIConnectionError):
        return LLMError("Could not reach the provider.", "llm_unavailable", 502)
    if isinstance(exc, openai.APIError):
        return LLMError(f"The provider reported an error: {detail()}", "llm_error", 502)
    return None


def _tool_output_text(output: Any) -> str:
    return output if isinstance(output, str) else json.dumps(output, default=str)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """A tool call's raw result, carried to the stream as the ToolMessage's artifact."""

    result: Any
    error: str | None = None


def _langchain_tool(tool: Tool) -> Any:
    """A LangChain StructuredTool from a runtime Tool: its JSON schema as is, its async fn."""
    from langchain_core.runnables.config import ensure_config
    from langchain_core.tools import StructuredTool

    async def run(**arguments: Any) -> tuple[str, _Outcome]:
        # The graph is shared by every call; the call's ToolContext comes in the RunnableConfig,
        # which LangChain sets for the tool's task (and only for it).
        context = ensure_config().get("configurable", {}).get(_TOOL_CONTEXT_KEY)
        if not isinstance(context, ToolContext):
            raise LookupError("a tool ran outside a Cadence call")
        try:
            output = await tool.fn(arguments, context)
        except Exception as exc:  # a tool's failure is the model's to handle, not the run's
            output = {"error": f"{type(exc).__name__}: {exc}"}
            return _tool_output_text(output), _Outcome(output, str(exc))
        return _tool_output_text(output), _Outcome(output)

    return StructuredTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.parameters,
        coroutine=run,
        # The model reads the text; the stream reports the raw value (and the error, if any).
        response_format="content_and_artifact",
    )


@dataclass(slots=True)
class _Run:
    """One stream() call's bookkeeping."""

    usage: Usage = Usage()
    content: str = ""
    finish_reason: str = "stop"
    turns: int = 0
    started: dict[str, tuple[str, float]] = field(default_factory=dict)  # task id → (node, t0)


class LangGraphRuntime:
    def __init__(self, config: RuntimeConfig) -> None:
        from langgraph.graph import END, START, MessagesState, StateGraph
        from langgraph.prebuilt import ToolNode

        require_openai_compatible(config, LangGraphAdapter.name)
        self.config = config
        self.tools = [_langchain_tool(tool) for tool in config.tools]
        self._models: PerLoop[Any] = PerLoop(self._make_model)

        # Annotations name only module-level types: LangGraph evaluates them, and the framework's
        # types are imported here, not at module level.
        async def call_model(state: dict[str, Any]) -> dict[str, Any]:
            return {"messages": [await self._models.get().ainvoke(state["messages"])]}

        def route(state: dict[str, Any]) -> str:
            return _TOOLS_NODE if getattr(state["messages"][-1], "tool_calls", None) else END

        graph = StateGraph(MessagesState)
        graph.add_node(_MODEL_NODE, call_model)
        graph.add_edge(START, _MODEL_NODE)
        if self.tools:
            # handle_tool_errors: an unknown tool name or bad arguments become an error message
            # the model can read, as in the native adapter; our own tools never raise.
            graph.add_node(_TOOLS_NODE, ToolNode(self.tools, handle_tool_errors=True))
            graph.add_conditional_edges(_MODEL_NODE, route, [_TOOLS_NODE, END])
            graph.add_edge(_TOOLS_NODE, _MODEL_NODE)
        else:
            graph.add_edge(_MODEL_NODE, END)
        self.graph = graph.compile(name=config.slug or "cadence")

    def _make_model(self) -> Any:
        from langchain_openai import ChatOpenAI

        llm = self.config.llm
        model = ChatOpenAI(
            model=llm.model,
            base_url=llm.base_url or DEFAULT_BASE_URL,
            # Never None: langchain-openai would fall back to OPENAI_API_KEY from the environment
            # and send the operator's key to the organization's endpoint.
            api_key=llm.api_key or "unused",
            temperature=llm.temperature,
            max_tokens=llm.max_tokens,
            timeout=llm.timeout,
            max_retries=llm.max_retries,
            streaming=True,
            stream_usage=True,
            http_async_client=outbound_http_client(llm.timeout),
        )
        return model.bind_tools(self.tools) if self.tools else model

    def _input(self, history: list[dict[str, Any]], message: str) -> list[dict[str, Any]]:
        system = (
            [{"role": "system", "content": self.config.system_prompt}]
            if self.config.system_prompt
            else []
        )
        return [*system, *history, {"role": "user", "content": message}]

    async def stream(
        self, history: list[dict[str, Any]], message: str, context: RunContext
    ) -> AsyncIterator[RuntimeEvent]:
        from langgraph.errors import GraphRecursionError

        run = _Run()
        began = time.perf_counter()
        run_config = {
            "configurable": {
                _TOOL_CONTEXT_KEY: ToolContext(org_slug=context.org_slug, run_id=context.run_id)
            },
            # One model turn and one tool turn per step: max_steps model calls, each tool round run.
            "recursion_limit": 2 * max(1, self.config.max_steps),
            "run_name": self.config.slug or "cadence",
        }
        events = self.graph.astream(
            {"messages": self._input(history, message)},
            run_config,
            stream_mode=["tasks", "messages", "updates"],
        )
        try:
            async with aclosing(events):
                async for mode, chunk in events:
                    for event in self._events(run, mode, chunk):
                        yield event
        except GraphRecursionError:
            run.content, run.finish_reason = STEP_LIMIT_REPLY, "max_steps"
        except Exception as exc:
            for node, t0 in run.started.values():
                yield StepEvent(node, "failed", _ms(t0), {"error": type(exc).__name__})
            error = llm_error(exc, self.config.llm)
            if error is None:
                raise
            raise error from exc
        yield StepEvent("run", "completed", _ms(began), {"turns": run.turns})
        yield FinalEvent(run.content, run.usage, run.finish_reason)

    def _events(self, run: _Run, mode: str, chunk: Any) -> list[RuntimeEvent]:
        if mode == "messages":
            message, metadata = chunk
            if (
                metadata.get("langgraph_node") == _MODEL_NODE
                and type(message).__name__ == "AIMessageChunk"
            ):
                text = _text(message.content)
                return [TokenEvent(text)] if text else []
            return []
        if mode == "tasks":
            return self._step(run, chunk)
        if mode == "updates":
            return self._update(run, chunk)
        return []

    def _step(self, run: _Run, task: dict[str, Any]) -> list[RuntimeEvent]:
        name = task.get("name", "")
        if "input" in task:  # a task starting; its end carries "result"
            run.started[task["id"]] = (name, time.perf_counter())
            if name == _MODEL_NODE:
                run.turns += 1
            return [StepEvent(name, "started")]
        _, t0 = run.started.pop(task["id"], (name, time.perf_counter()))
        error = task.get("error")
        if error is not None:
            return [
                StepEvent(name, "failed", _ms(t0), {"error": f"{type(error).__name__}: {error}"})
            ]
        return [StepEvent(name, "completed", _ms(t0))]

    def _update(self, run: _Run, update: dict[str, Any]) -> list[RuntimeEvent]:
        events: list[RuntimeEvent] = []
        for node, values in (update or {}).items():
            for message in (values or {}).get("messages", []):
                if node == _MODEL_NODE:
                    usage = getattr(message, "usage_metadata", None) or {}
                    run.usage = run.usage + Usage(
                        int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
                    )
                    run.content = _text(message.content)
                    run.finish_reason = (message.response_metadata or {}).get(
                        "finish_reason"
                    ) or "stop"
                    events += [
                        ToolCallEvent(call["id"] or "", call["name"], dict(call["args"] or {}))
                        for call in message.tool_calls
                    ]
                elif node == _TOOLS_NODE:
                    outcome = getattr(message, "artifact", None)
                    if isinstance(outcome, _Outcome):
                        events.append(
                            ToolResultEvent(
                                message.tool_call_id,
                                message.name or "",
                                outcome.result,
                                outcome.error,
                            )
                        )
                    else:  # ToolNode's own error message: unknown tool, arguments that do not fit
                        text = _text(message.content)
                        failed = getattr(message, "status", "success") == "error"
                        events.append(
                            ToolResultEvent(
                                message.tool_call_id,
                                message.name or "",
                                text,
                                text if failed else None,
                            )
                        )
        return events


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part if isinstance(part, str) else str(part.get("text", ""))
            for part in content
            if isinstance(part, str) or (isinstance(part, dict) and part.get("type") == "text")
        )
    return ""


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


class LangGraphAdapter:
    name = "langgraph"

    def available(self) -> bool:
        return all(
            importlib.util.find_spec(module) is not None
            for module in ("langgraph", "langchain_openai")
        )

    def build(self, config: RuntimeConfig) -> LangGraphRuntime:
        return LangGraphRuntime(config)
