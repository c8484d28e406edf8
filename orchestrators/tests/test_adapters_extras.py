"""The optional framework adapters (LangGraph, OpenAI Agents SDK) against a real OpenAI-style server.

Each test runs for both frameworks; a framework whose package is not installed is skipped.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from orchestrators.adapters.langgraph import LangGraphAdapter
from orchestrators.adapters.openai_agents import OpenAIAgentsAdapter
from orchestrators.runtime import (
    FinalEvent,
    LLMError,
    LLMSettings,
    RunContext,
    RuntimeConfig,
    StepEvent,
    TokenEvent,
    Tool,
    ToolCallEvent,
    ToolContext,
    ToolResultEvent,
    Usage,
)

ADAPTERS = {"langgraph": LangGraphAdapter(), "openai_agents": OpenAIAgentsAdapter()}
FRAMEWORKS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            not adapter.available(), reason=f"{name} is not installed (requirements-extras.txt)"
        ),
    )
    for name, adapter in ADAPTERS.items()
]
API_KEY = "sk-test-4f9c"
ROOT = Path(__file__).resolve().parents[2]
ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
}


def _tools(seen: list[tuple[dict[str, Any], ToolContext]]) -> tuple[Tool, ...]:
    async def add(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        seen.append((args, ctx))
        return {"sum": args["a"] + args["b"]}

    async def whoami(args: dict[str, Any], ctx: ToolContext) -> str:
        await asyncio.sleep(0.01)  # lets concurrent calls interleave
        return ctx.org_slug

    async def broken(args: dict[str, Any], ctx: ToolContext) -> Any:
        raise ValueError("the disk is full")

    return (
        Tool("add", "Add two numbers", ADD_SCHEMA, add),
        Tool("whoami", "The caller's organization", {"type": "object", "properties": {}}, whoami),
        Tool("broken", "Always fails", {"type": "object", "properties": {}}, broken),
    )


def _runtime(framework: str, base_url: str, seen: list | None = None, **overrides: Any):
    llm = LLMSettings(
        provider="openai_compatible",
        model="gpt-test",
        base_url=base_url,
        api_key=API_KEY,
        temperature=0.2,
        max_tokens=200,
        timeout=10.0,
        max_retries=0,
    )
    values: dict[str, Any] = dict(
        org_slug="alpha",
        instance_id="i1",
        slug="helper",
        framework=framework,
        flow={},
        system_prompt="Be brief.",
        llm=llm,
        tools=_tools([] if seen is None else seen),
        max_steps=4,
    )
    values.update(overrides)
    return ADAPTERS[framework].build(RuntimeConfig(**values))


async def _collect(
    runtime, message: str = "hi", history: list[dict[str, Any]] | None = None, org: str = "alpha"
) -> list:
    return [
        event
        async for event in runtime.stream(
            list(history or []), message, RunContext(org_slug=org, run_id=f"run-{org}")
        )
    ]


def _of(events: list, kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_plain_reply_streams_tokens_then_one_final_with_usage(framework, openai_server):
    openai_server.reply("Hello there, Ada.", chunks=["Hel", "lo there", ", Ada."], usage=(12, 5))

    events = await _collect(_runtime(framework, openai_server.base_url))

    tokens = [e.delta for e in _of(events, TokenEvent)]
    assert tokens == ["Hel", "lo there", ", Ada."]
    assert _of(events, FinalEvent) == [FinalEvent("Hello there, Ada.", Usage(12, 5), "stop")]
    assert events[-1] == FinalEvent("Hello there, Ada.", Usage(12, 5), "stop")
    assert len(openai_server.requests) == 1
    assert openai_server.requests[0].body["stream"] is True


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_system_prompt_history_and_settings_reach_the_server(framework, openai_server):
    openai_server.reply("ok")
    history = [{"role": "user", "content": "before"}, {"role": "assistant", "content": "noted"}]

    await _collect(_runtime(framework, openai_server.base_url), "now", history)

    body = openai_server.requests[0].body
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("system", "Be brief."),
        ("user", "before"),
        ("assistant", "noted"),
        ("user", "now"),
    ]
    assert body["model"] == "gpt-test"
    assert body["temperature"] == 0.2
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 200
    assert body["stream_options"] == {"include_usage": True}
    assert [t["function"]["name"] for t in body["tools"]] == ["add", "whoami", "broken"]
    assert body["tools"][0]["function"]["parameters"] == ADD_SCHEMA


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_api_key_is_sent_as_bearer_header(framework, openai_server):
    openai_server.reply("ok")

    await _collect(_runtime(framework, openai_server.base_url))

    assert openai_server.requests[0].headers["authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_tool_call_runs_the_tool_and_the_second_turn_answers(framework, openai_server):
    openai_server.tool_call("add", {"a": 2, "b": 3}, id="call_7", usage=(20, 4))
    openai_server.reply("The sum is 5.", usage=(30, 6))
    seen: list = []

    events = await _collect(_runtime(framework, openai_server.base_url, seen), "What is 2+3?")

    assert seen == [({"a": 2, "b": 3}, ToolContext(org_slug="alpha", run_id="run-alpha"))]
    assert _of(events, ToolCallEvent) == [ToolCallEvent("call_7", "add", {"a": 2, "b": 3})]
    assert _of(events, ToolResultEvent) == [ToolResultEvent("call_7", "add", {"sum": 5}, None)]
    kinds = [type(e).__name__ for e in events if not isinstance(e, StepEvent)]
    assert kinds.index("ToolCallEvent") < kinds.index("ToolResultEvent") < kinds.index("TokenEvent")
    assert "".join(e.delta for e in _of(events, TokenEvent)) == "The sum is 5."
    # Usage is summed over both model calls.
    assert events[-1] == FinalEvent("The sum is 5.", Usage(50, 10), "stop")
    second = openai_server.requests[1].body["messages"]
    assert second[-2]["role"] == "assistant"
    assert second[-2]["tool_calls"][0]["id"] == "call_7"
    assert second[-2]["tool_calls"][0]["function"]["name"] == "add"
    assert json.loads(second[-2]["tool_calls"][0]["function"]["arguments"]) == {"a": 2, "b": 3}
    assert second[-1] == {"role": "tool", "tool_call_id": "call_7", "content": '{"sum": 5}'}


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_step_events_frame_each_model_turn_and_tool_round(framework, openai_server):
    openai_server.tool_call("add", {"a": 1, "b": 1})
    openai_server.reply("2")

    events = await _collect(_runtime(framework, openai_server.base_url))

    steps = [(e.name, e.status) for e in _of(events, StepEvent)]
    if framework == "langgraph":
        expected = [
            ("model", "started"),
            ("model", "completed"),
            ("tools", "started"),
            ("tools", "completed"),
            ("model", "started"),
            ("model", "completed"),
            ("run", "completed"),
        ]
    else:
        expected = [
            ("turn", "started"),
            ("turn", "completed"),
            ("turn", "started"),
            ("turn", "completed"),
            ("run", "completed"),
        ]
    assert steps == expected
    for step in _of(events, StepEvent):
        assert (step.duration_ms is None) == (step.status == "started")
        assert step.duration_ms is None or step.duration_ms >= 0
    assert _of(events, StepEvent)[-1].detail == {"turns": 2}
    assert isinstance(events[-1], FinalEvent)


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_a_failing_tool_reports_its_error_and_the_model_carries_on(framework, openai_server):
    openai_server.tool_call("broken", {}, id="call_b")
    openai_server.reply("Sorry, that failed.")

    events = await _collect(_runtime(framework, openai_server.base_url))

    assert _of(events, ToolResultEvent) == [
        ToolResultEvent(
            "call_b", "broken", {"error": "ValueError: the disk is full"}, "the disk is full"
        )
    ]
    assert (
        openai_server.requests[1].body["messages"][-1]["content"]
        == '{"error": "ValueError: the disk is full"}'
    )
    assert events[-1].content == "Sorry, that failed."


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_step_limit_ends_the_run_with_max_steps(framework, openai_server):
    openai_server.tool_call("add", {"a": 1, "b": 2}, id="call_1", usage=(3, 1))
    openai_server.tool_call("add", {"a": 3, "b": 4}, id="call_2", usage=(3, 1))

    events = await _collect(_runtime(framework, openai_server.base_url, max_steps=2))

    assert len(openai_server.requests) == 2
    assert events[-1] == FinalEvent(
        "I stopped after reaching the step limit.", Usage(6, 2), "max_steps"
    )
    assert len(_of(events, FinalEvent)) == 1


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_concurrent_calls_on_one_runtime_keep_their_own_tool_context(
    framework, openai_server
):
    openai_server.tool_call("whoami", {}, id="call_x")
    openai_server.tool_call("whoami", {}, id="call_y")
    openai_server.default_text = "done"
    runtime = _runtime(framework, openai_server.base_url)

    alpha, beta = await asyncio.gather(
        _collect(runtime, org="alpha"), _collect(runtime, org="beta")
    )

    results = [(e.result, "alpha") for e in _of(alpha, ToolResultEvent)] + [
        (e.result, "beta") for e in _of(beta, ToolResultEvent)
    ]
    assert len(results) == 2
    assert all(result == org for result, org in results)
    assert alpha[-1].content == beta[-1].content == "done"


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_provider_error_becomes_an_llm_error(framework, openai_server):
    openai_server.error(401, message=f"Incorrect API key provided: {API_KEY}")

    with pytest.raises(LLMError) as caught:
        await _collect(_runtime(framework, openai_server.base_url))

    assert (caught.value.code, caught.value.status) == ("llm_auth_failed", 401)
    assert API_KEY not in str(caught.value)


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_egress_policy_refuses_a_private_endpoint(framework, openai_server, settings):
    # The model goes through Cadence's outbound client: without the allowance, 127.0.0.1 is refused
    # before any connection is opened.
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = []
    settings.CADENCE_EGRESS_ALLOW_PRIVATE = False

    with pytest.raises(LLMError) as caught:
        await _collect(_runtime(framework, openai_server.base_url))

    assert caught.value.code == "egress_denied"
    assert openai_server.requests == []


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_runtime_streams_on_a_second_event_loop(framework, openai_server):
    # A pooled runtime outlives the loop it first ran on (a Celery task's asyncio.run).
    runtime = _runtime(framework, openai_server.base_url)
    openai_server.reply("first")
    await _collect(runtime)
    openai_server.reply("second")

    events = await asyncio.to_thread(lambda: asyncio.run(_collect(runtime)))

    assert events[-1].content == "second"


def test_modules_import_and_report_unavailable_without_the_frameworks():
    code = textwrap.dedent(
        """
        import sys
        for name in ("langgraph", "langchain_openai", "langchain_core", "agents"):
            sys.modules[name] = None  # import fails, find_spec answers None
        from orchestrators.adapters.langgraph import LangGraphAdapter
        from orchestrators.adapters.openai_agents import OpenAIAgentsAdapter
        print(LangGraphAdapter().available(), OpenAIAgentsAdapter().available())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_build_refuses_a_provider_the_framework_cannot_drive(framework, openai_server):
    config = RuntimeConfig(
        org_slug="alpha",
        instance_id="i1",
        slug="helper",
        framework=framework,
        flow={},
        system_prompt="",
        llm=LLMSettings(provider="offline", model="m"),
    )

    with pytest.raises(LLMError) as caught:
        ADAPTERS[framework].build(config)

    assert caught.value.code == "provider_not_supported"


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_a_consumer_that_leaves_early_stops_the_run(framework, openai_server):
    openai_server.reply("one two three four five six", chunk_delay=0.05)
    runtime = _runtime(framework, openai_server.base_url)
    stream = runtime.stream([], "hi", RunContext(org_slug="alpha"))

    first = await anext(aiter(stream))
    while not isinstance(first, TokenEvent):
        first = await anext(stream)
    await stream.aclose()

    assert first == TokenEvent("one ")
    # Nothing of the abandoned run is left running, and the runtime serves the next call.
    openai_server.reply("again")
    events = await _collect(runtime)
    assert events[-1].content == "again"
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
