"""The native adapter: an orchestrator's flow runs on Cadence's engine.

The default flow is `prepare_prompt → agent → finalize`; `agent` calls the model, runs the tool
calls it asked for in parallel with the engine's `.sync`, and repeats until the model stops asking
or the step limit is reached. Tools the client declared (`RunContext.client_tools`, from `/v1`)
are offered beside the orchestrator's own; a call of one ends the turn with finish reason
`tool_calls` and the calls in `FinalEvent.tool_calls`, and the client's next request carries
their results as `tool` messages at the end of the history (no new user message). Flows name notes from `agent_notes()`; plugins add more later.

Events leave the engine through a context variable holding the running call's queue, so that the
built cadence is shared by every concurrent call (built once per instance, ~µs per run).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import json
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from engine import Cadence, Score
from engine.exclusive import sections as exclusive_sections
from engine.flow import NoteRegistry, build_cadence
from engine.tracing import (
    ReadTracked,
    StepEnd,
    StepStart,
    TracingHooks,
    current_step,
    new_step_id,
    resource_usage,
    stack_of,
)
from orchestrators.runtime import (
    FinalEvent,
    LLMDelta,
    LLMError,
    LLMResult,
    LogEvent,
    ModelOptions,
    RunContext,
    RuntimeConfig,
    RuntimeEvent,
    StepEvent,
    TokenEvent,
    ToolCall,
    ToolCallEvent,
    ToolContext,
    ToolResultEvent,
    Usage,
    effective_max_tokens,
    effective_temperature,
    log_route,
)

DEFAULT_FLOW: dict[str, Any] = {
    "name": "single-agent",
    "description": "Prepare the prompt, loop model and tools until done, then finish.",
    "steps": [{"then": "prepare_prompt"}, {"then": "agent"}, {"then": "finalize"}],
}


@dataclass
class AgentScore(ReadTracked, Score):
    # ReadTracked: each step's record names the fields it read (engine/lineage.py).
    messages: list[dict[str, Any]] = field(default_factory=list)
    final: str = ""
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    turns: int = 0
    tool_results: dict[str, Any] = field(default_factory=dict)
    client_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class _Call:
    """What one stream() call shares with the notes it runs."""

    runtime: NativeRuntime
    queue: asyncio.Queue
    context: RunContext
    history: list[dict[str, Any]]
    message: str


_current: contextvars.ContextVar[_Call] = contextvars.ContextVar("cadence_native_call")


def _emit(event: RuntimeEvent) -> None:
    _current.get().queue.put_nowait(event)


async def prepare_prompt(score: AgentScore) -> None:
    call = _current.get()
    system = call.runtime.config.system_prompt
    history = list(call.history)
    # A client answering its tools' calls sends their results last and no new user message.
    continuing = not call.message and history and history[-1].get("role") == "tool"
    score.messages = (
        ([{"role": "system", "content": system}] if system else [])
        + history
        + ([] if continuing else [{"role": "user", "content": call.message}])
    )


async def agent(score: AgentScore) -> None:
    call = _current.get()
    runtime = call.runtime
    own = {tool.name for tool in runtime.config.tools}
    client = [t for t in call.context.client_tools if _tool_name(t) not in own]
    specs = [tool.spec() for tool in runtime.config.tools] + client or None
    client_names = {_tool_name(t) for t in client}
    for _ in range(runtime.config.max_steps):
        score.turns += 1
        result = await _model_call(call, score.messages, specs)
        score.prompt_tokens += result.usage.prompt_tokens
        score.completion_tokens += result.usage.completion_tokens
        if not result.tool_calls:
            score.final, score.finish_reason = result.content, result.finish_reason or "stop"
            return
        wanted = [c for c in result.tool_calls if c.name in client_names]
        if wanted:
            # The client runs these: the turn ends here and its next request carries the results.
            # Calls of the orchestrator's own tools in the same answer are dropped: the model
            # asks again, if it still needs them, once it has the client's results.
            score.final, score.finish_reason = result.content, "tool_calls"
            score.client_calls = [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in wanted
            ]
            for c in wanted:
                _emit(ToolCallEvent(c.id, c.name, c.arguments))
            return
        score.messages.append(
            {
                "role": "assistant",
                "content": result.content or None,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {
                            "name": c.name,
                            "arguments": json.dumps(c.arguments, sort_keys=True),
                        },
                    }
                    for c in result.tool_calls
                ],
            }
        )
        await _run_tools(score, result)
    score.final, score.finish_reason = "I stopped after reaching the step limit.", "max_steps"


def _tool_name(spec: dict[str, Any]) -> str:
    return str((spec.get("function") or {}).get("name", ""))


async def _model_call(
    call: _Call, messages: list[dict[str, Any]], specs: list[dict[str, Any]] | None
) -> LLMResult:
    """One model call, a step of its own (kind `llm_call`) under the note that made it."""
    context = call.context
    options = context.options
    if context.before_model_call is not None:
        # The most tokens this call may produce (a token budget's reservation): the model is
        # asked for no more, so a reply with no max_tokens ends with finish reason "length"
        # when its reservation is used up instead of overrunning the budget.
        cap = await context.before_model_call(messages)
        if cap is not None:
            asked = options.max_tokens if options is not None else None
            options = replace(
                options or ModelOptions(), max_tokens=min(cap, asked) if asked else cap
            )
    llm = call.runtime.config.llm
    step, parent = new_step_id(), current_step.get()
    _emit(
        StepEvent("llm_call", "started", None, {"id": step, "parent": parent, "kind": "llm_call"})
    )
    started, (cpu0, _) = time.perf_counter(), resource_usage()
    first_token: float | None = None
    result: LLMResult | None = None
    # Only when the request asks for something: providers written before options took none.
    extra = {"options": options} if options is not None else {}
    error: BaseException | None = None
    # What the provider logs meanwhile belongs to this step (engine/runs/runlog.py).
    inside = current_step.set(step)
    try:
        async for chunk in call.runtime.provider.stream(messages, specs, **extra):
            if isinstance(chunk, LLMDelta):
                if chunk.content:
                    if first_token is None:
                        first_token = time.perf_counter()
                    _emit(TokenEvent(chunk.content))
            else:
                result = chunk
        if result is None:
            raise LLMError("the model ended without a result", "llm_protocol_error")
    except BaseException as exc:
        error = exc
        raise
    finally:
        current_step.reset(inside)
        usage = result.usage if result is not None else Usage()
        detail: dict[str, Any] = {
            "id": step,
            "parent": parent,
            "kind": "llm_call",
            "inputs": {"messages": messages, "tools": [t["function"]["name"] for t in specs or []]},
            "outputs": {
                "content": result.content if result is not None else "",
                "tool_calls": [
                    {"id": c.id, "name": c.name, "arguments": c.arguments}
                    for c in (result.tool_calls if result is not None else ())
                ],
                "finish_reason": result.finish_reason if result is not None else "",
            },
            "llm": {
                "provider": llm.provider,
                "model": llm.model,
                "config_id": llm.config_id,
                # What the model was asked with: the request's options over the configuration.
                "parameters": {
                    "temperature": effective_temperature(llm, options),
                    "max_tokens": effective_max_tokens(llm, options),
                },
                "tokens_in": usage.prompt_tokens,
                "tokens_out": usage.completion_tokens,
                "ttft_ms": round((first_token - started) * 1000, 3) if first_token else None,
            },
            "cpu_ms": round((resource_usage()[0] - cpu0) * 1000, 3),
        }
        if error is not None:
            detail["error"] = f"{type(error).__name__}: {error}"
            detail["error_type"] = type(error).__name__
            detail["stack"] = stack_of(error)
        _emit(
            StepEvent(
                "llm_call",
                "failed" if error is not None else "completed",
                round((time.perf_counter() - started) * 1000, 3),
                detail,
            )
        )
        if context.after_model_call is not None:
            await context.after_model_call(usage)
    return result


async def _run_tools(score: AgentScore, result: LLMResult) -> None:
    """The model's tool calls, in parallel, on the engine's `.sync` (one note per call)."""
    call = _current.get()
    tools = {tool.name: tool for tool in call.runtime.config.tools}
    context = call.context

    async def tool_context(step: str) -> ToolContext:
        key = ""
        if context.step_seq is not None:
            await call.queue.join()  # the step's "started" event is recorded: it has its number
            seq = context.step_seq(step)
            key = f"{context.run_id}:{seq}" if seq is not None else ""
        return ToolContext(org_slug=context.org_slug, run_id=context.run_id, idempotency_key=key)

    def note_for(index: int, tool_call):
        async def run_tool(s: AgentScore) -> None:
            step, parent = new_step_id(), current_step.get()
            base = {"id": step, "parent": parent, "kind": "tool_call", "call_id": tool_call.id}
            _emit(StepEvent(tool_call.name, "started", None, base))
            _emit(ToolCallEvent(tool_call.id, tool_call.name, tool_call.arguments))
            started = time.perf_counter()
            tool = tools.get(tool_call.name)
            error, failure = None, None
            if tool is None:
                output: Any = {"error": f"unknown tool {tool_call.name!r}"}
                error = output["error"]
            else:
                # What the tool logs belongs to its step (engine/runs/runlog.py).
                inside = current_step.set(step)
                try:
                    output = await tool.fn(tool_call.arguments, await tool_context(step))
                except Exception as exc:  # a tool's failure is the model's to handle, not the run's
                    output, error, failure = (
                        {"error": f"{type(exc).__name__}: {exc}"},
                        str(exc),
                        exc,
                    )
                finally:
                    current_step.reset(inside)
            s.tool_results[tool_call.id] = output
            _emit(ToolResultEvent(tool_call.id, tool_call.name, output, error))
            detail = {
                **base,
                "inputs": {"arguments": tool_call.arguments},
                "outputs": {"result": output},
            }
            if error is not None:
                detail["error"] = error
                detail["error_type"] = type(failure).__name__ if failure else "UnknownTool"
                detail["stack"] = stack_of(failure) if failure else ""
            _emit(
                StepEvent(
                    tool_call.name,
                    "failed" if error is not None else "completed",
                    round((time.perf_counter() - started) * 1000, 3),
                    detail,
                )
            )

        run_tool.__name__ = f"tool_{index}_{tool_call.name}"
        return run_tool

    # Each note writes its own key of tool_results: smart_merge unites the dicts.
    group = Cadence("tools", AgentScore(tool_results={})).sync(
        "tool_calls",
        [note_for(i, c) for i, c in enumerate(result.tool_calls)],
        merge_strategy="smart_merge",
    )
    done = await group.run(AgentScore(tool_results={}))
    for tool_call in result.tool_calls:
        output = done.tool_results.get(tool_call.id)
        score.messages.append(
            {
                "role": "tool",
                "tool_call_id": tool_call.id,
                "content": output
                if isinstance(output, str)
                else json.dumps(output, default=str, sort_keys=True),
            }
        )


async def finalize(score: AgentScore) -> None:
    if not score.finish_reason:
        score.finish_reason = "stop"


def agent_notes(extra: Mapping[str, Any] | None = None) -> NoteRegistry:
    """The agent's notes, plus `extra` ones (plugins' code notes, named `plugin.note`)."""
    return NoteRegistry(
        {"prepare_prompt": prepare_prompt, "agent": agent, "finalize": finalize, **(extra or {})}
    )


def _step_started(start: StepStart) -> None:
    if _current.get(None) is not None:
        _emit(
            StepEvent(
                start.name,
                "started",
                None,
                {"id": start.step_id, "parent": start.parent_id, "kind": start.kind},
            )
        )


def _step_ended(end: StepEnd) -> None:
    """The engine's record of a finished measure → a step event with what it read and wrote."""
    if _current.get(None) is None:
        return
    detail: dict[str, Any] = {
        "id": end.step_id,
        "parent": end.parent_id,
        "kind": end.kind,
        "inputs": end.inputs,
        "outputs": end.changes,
        "cpu_ms": end.cpu_ms,
        "memory_kb": end.memory_kb,
    }
    if end.reads is not None:
        detail["reads"] = end.reads
    if end.forked:
        detail["forked"] = True
    if end.error is not None:
        original = getattr(end.error, "original_error", None) or end.error
        detail["error"] = f"{type(end.error).__name__}: {end.error}"
        detail["error_type"] = type(original).__name__
        detail["stack"] = end.stack
    _emit(StepEvent(end.name, end.outcome, round(end.duration * 1000, 3), detail))


_DONE = object()


def traced(cadence: Cadence) -> Cadence:
    """`cadence` with every step (inner notes and child measures too) recorded as step events."""
    return TracingHooks(_step_started, _step_ended).instrument(cadence)


class _Observed:
    """A checkpoint store that saves only once the caller has handled every event emitted so far:
    the steps a checkpoint covers are then in the caller's record when it is saved."""

    def __init__(self, store: Any, queue: asyncio.Queue) -> None:
        self.store, self.queue = store, queue

    async def save(self, run_id: str, checkpoint: Any) -> None:
        await self.queue.join()
        await self.store.save(run_id, checkpoint)

    async def load(self, run_id: str) -> Any:
        return await self.store.load(run_id)

    async def delete(self, run_id: str) -> None:
        await self.store.delete(run_id)


class NativeRuntime:
    def __init__(self, config: RuntimeConfig, provider: Any) -> None:
        self.config = config
        self.provider = provider
        # The flow as built (replay runs parts of it) and as run: every step recorded.
        self.flow = build_cadence(config.flow or DEFAULT_FLOW, agent_notes(config.notes))
        self.cadence = traced(self.flow)

    async def stream(
        self,
        history: list[dict[str, Any]],
        message: str,
        context: RunContext,
        *,
        cadence: Cadence | None = None,
        score: AgentScore | None = None,
    ) -> AsyncIterator[RuntimeEvent]:
        """The turn's events; `cadence` and `score` (a traced part of the flow and the state it
        starts from) let a replay run one step, or the flow from a step, on recorded inputs."""
        queue: asyncio.Queue = asyncio.Queue()
        call = _Call(self, queue, context, history, message)
        started = time.perf_counter()
        flow = cadence if cadence is not None else self.cadence
        if cadence is None and context.checkpoints is not None:
            # A durable run: a copy of the shared cadence saves after each measure, and a run
            # started again resumes after the last measure it completed.
            flow = copy.copy(flow).with_checkpoint(
                _Observed(context.checkpoints, queue), context.run_id
            )
        start = score if score is not None else AgentScore()

        loop, thread = asyncio.get_running_loop(), threading.get_ident()

        def route(event: LogEvent) -> None:
            # Log lines join the step events in the order they happened; a line logged on
            # another thread (a tool's executor) is handed to the loop.
            if threading.get_ident() == thread:
                queue.put_nowait(event)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, event)

        async def run() -> AgentScore:
            token, routed = _current.set(call), log_route.set(route)
            locks = exclusive_sections.set(context.exclusive)
            try:
                return await flow.run(start)
            finally:
                exclusive_sections.reset(locks)
                log_route.reset(routed)
                _current.reset(token)
                queue.put_nowait(_DONE)

        task = asyncio.create_task(run())
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                yield item
                queue.task_done()  # the caller has handled it (a checkpoint waits for that)
            try:
                score = await task
            except Exception as exc:
                # The engine wraps a note's failure; callers act on the model's error itself.
                original = getattr(exc, "original_error", None)
                raise (original if isinstance(original, LLMError) else exc) from exc
        finally:
            if not task.done():
                # The consumer went away or was cancelled: stop the engine run (and its tools).
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        yield StepEvent(
            "run",
            "completed",
            round((time.perf_counter() - started) * 1000, 3),
            {"turns": score.turns},
        )
        yield FinalEvent(
            score.final,
            Usage(score.prompt_tokens, score.completion_tokens),
            score.finish_reason,
            tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in score.client_calls),
        )


class NativeAdapter:
    name = "cadence"

    def available(self) -> bool:
        return True

    def build(self, config: RuntimeConfig, provider: Any = None) -> NativeRuntime:
        if provider is None:
            from orchestrators.llm import provider_for

            provider = provider_for(config.llm)
        return NativeRuntime(config, provider)
