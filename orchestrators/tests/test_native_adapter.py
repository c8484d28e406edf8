from __future__ import annotations

import asyncio

import pytest

from orchestrators.adapters.cadence import DEFAULT_FLOW, NativeAdapter
from orchestrators.runtime import (
    FinalEvent,
    LLMDelta,
    LLMError,
    LLMResult,
    LLMSettings,
    RunContext,
    RuntimeConfig,
    StepEvent,
    TokenEvent,
    Tool,
    ToolCall,
    ToolCallEvent,
    ToolResultEvent,
    Usage,
)


class ScriptedProvider:
    """Stands in for a model at the provider interface; the real providers are tested against a server."""

    def __init__(self, turns):
        self.turns = list(turns)
        self.seen: list[list[dict]] = []

    async def stream(self, messages, tools=None):
        self.seen.append([dict(m) for m in messages])
        turn = self.turns.pop(0)
        if isinstance(turn, Exception):
            raise turn
        text, calls = turn
        for word in text.split(" "):
            if word:
                yield LLMDelta(word + " ")
        yield LLMResult(text, tuple(calls), Usage(10, 5), "tool_calls" if calls else "stop")


async def _add(args, ctx):
    await asyncio.sleep(0.01)
    return {"sum": args["a"] + args["b"]}


ADD = Tool(
    "add",
    "Add two numbers",
    {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
    _add,
)


def _config(**overrides) -> RuntimeConfig:
    values = dict(
        org_slug="alpha",
        instance_id="i1",
        slug="helper",
        framework="cadence",
        flow=DEFAULT_FLOW,
        system_prompt="Be brief.",
        llm=LLMSettings(provider="offline", model="m"),
        tools=(ADD,),
        max_steps=4,
    )
    values.update(overrides)
    return RuntimeConfig(**values)


async def _collect(runtime, message="hi", history=()):
    return [
        event
        async for event in runtime.stream(list(history), message, RunContext(org_slug="alpha"))
    ]


@pytest.mark.asyncio
async def test_plain_reply_streams_tokens_steps_and_one_final():
    provider = ScriptedProvider([("Hello there", [])])
    runtime = NativeAdapter().build(_config(), provider)

    events = await _collect(
        runtime,
        "hi",
        [{"role": "user", "content": "before"}, {"role": "assistant", "content": "ok"}],
    )

    tokens = "".join(e.delta for e in events if isinstance(e, TokenEvent))
    finals = [e for e in events if isinstance(e, FinalEvent)]
    steps = [(e.name, e.status) for e in events if isinstance(e, StepEvent)]
    assert tokens == "Hello there "
    assert finals == [FinalEvent("Hello there", Usage(10, 5), "stop")]
    assert steps[:2] == [("prepare_prompt", "started"), ("prepare_prompt", "completed")]
    assert ("agent", "completed") in steps and ("finalize", "completed") in steps
    assert provider.seen[0] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "before"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "hi"},
    ]


@pytest.mark.asyncio
async def test_tool_calls_run_in_parallel_and_feed_the_next_turn():
    calls = [ToolCall("c1", "add", {"a": 2, "b": 3}), ToolCall("c2", "add", {"a": 10, "b": 1})]
    provider = ScriptedProvider([("", calls), ("The sums are 5 and 11", [])])
    runtime = NativeAdapter().build(_config(), provider)

    started = asyncio.get_running_loop().time()
    events = await _collect(runtime, "add things")
    elapsed = asyncio.get_running_loop().time() - started

    assert [(e.id, e.name) for e in events if isinstance(e, ToolCallEvent)] == [
        ("c1", "add"),
        ("c2", "add"),
    ]
    results = {e.id: e.result for e in events if isinstance(e, ToolResultEvent)}
    assert results == {"c1": {"sum": 5}, "c2": {"sum": 11}}
    tool_messages = [m for m in provider.seen[1] if m["role"] == "tool"]
    assert tool_messages == [
        {"role": "tool", "tool_call_id": "c1", "content": '{"sum": 5}'},
        {"role": "tool", "tool_call_id": "c2", "content": '{"sum": 11}'},
    ]
    assert events[-1] == FinalEvent("The sums are 5 and 11", Usage(20, 10), "stop")
    assert elapsed < 0.5


@pytest.mark.asyncio
async def test_step_limit_ends_the_loop():
    loop_call = [ToolCall("c", "add", {"a": 1, "b": 1})]
    provider = ScriptedProvider([("", loop_call)] * 2)
    runtime = NativeAdapter().build(_config(max_steps=2), provider)

    events = await _collect(runtime)

    assert events[-1].finish_reason == "max_steps"
    assert len(provider.seen) == 2


@pytest.mark.asyncio
async def test_unknown_tool_is_reported_to_the_model_not_raised():
    provider = ScriptedProvider([("", [ToolCall("c", "nope", {})]), ("sorry", [])])
    runtime = NativeAdapter().build(_config(), provider)

    events = await _collect(runtime)

    result = next(e for e in events if isinstance(e, ToolResultEvent))
    assert result.error == "unknown tool 'nope'"
    assert events[-1].content == "sorry"


@pytest.mark.asyncio
async def test_a_model_error_surfaces_as_llm_error():
    provider = ScriptedProvider(
        [LLMError("the provider rejected the API key", "llm_auth_failed", 401)]
    )
    runtime = NativeAdapter().build(_config(), provider)

    with pytest.raises(LLMError) as caught:
        await _collect(runtime)

    assert caught.value.code == "llm_auth_failed"


@pytest.mark.asyncio
async def test_concurrent_calls_on_one_runtime_do_not_mix():
    providers = ScriptedProvider([(f"reply {i}", []) for i in range(20)])
    runtime = NativeAdapter().build(_config(), providers)

    results = await asyncio.gather(*(_collect(runtime, f"m{i}") for i in range(20)))

    finals = sorted(r[-1].content for r in results)
    assert finals == sorted(f"reply {i}" for i in range(20))
    for events in results:
        text = "".join(e.delta for e in events if isinstance(e, TokenEvent)).strip()
        assert text == events[-1].content
