"""OpenAI requests honoured in full, through the clients people use: the official `openai`
client, LangChain's ChatOpenAI and the OpenAI Agents SDK, pointed at a live Cadence server.

The offline model answers `/tool <name> <json>` with a call of that tool, so a client's own
tools are exercised with no model: the turn ends with `finish_reason: tool_calls`, the client
runs the tool and sends its result as a `tool` message, and the model answers from it.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from pydantic import BaseModel

from chat.tests.test_openai_api import FAST, TOOLS, UPSTREAM, live, upstream  # noqa: F401

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ASK = '/tool get_weather {"city": "Paris"}'


def _client(live, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.base}/v1", api_key=key, max_retries=0, timeout=20)


def _post(live, world, body: dict) -> httpx.Response:
    headers = {"Authorization": f"Bearer {world.alpha.keys['member']}"}
    return httpx.post(f"{live.base}/v1/chat/completions", json=body, headers=headers, timeout=20)


# --- validation as OpenAI does it ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"temperature": 5}, "temperature", "decimal_above_max_value"),
        ({"temperature": "hot"}, "temperature", "invalid_type"),
        ({"top_p": -0.1}, "top_p", "decimal_below_min_value"),
        ({"max_tokens": 0}, "max_tokens", "integer_below_min_value"),
        ({"max_completion_tokens": 2.5}, "max_completion_tokens", "invalid_type"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
        ({"seed": "x"}, "seed", "invalid_type"),
        ({"user": 7}, "user", "invalid_type"),
        ({"metadata": {"k": 1}}, "metadata", "invalid_value"),
        ({"frobnicate": True}, "frobnicate", "unknown_parameter"),
        ({"logprobs": True}, "logprobs", "unsupported_parameter"),
        ({"response_format": {"type": "xml"}}, "response_format", "invalid_value"),
        (
            {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            "invalid_value",
        ),
    ],
)
def test_out_of_range_and_unknown_parameters_get_openais_400(live, world, extra, param, code):
    response = _post(
        live, world, {"model": FAST, "messages": [{"role": "user", "content": "x"}]} | extra
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


def test_nulls_are_not_given_as_openais_sdks_send_them(live, world):
    body = {
        "model": FAST,
        "messages": [{"role": "user", "content": "nulls"}],
        **dict.fromkeys(("temperature", "top_p", "max_tokens", "stop", "seed", "tools", "user")),
        "n": 1,
        "logprobs": False,
        "store": False,
    }

    assert _post(live, world, body).status_code == 200


# --- sampling parameters reach the model, capped by the configuration ---------------------------


def test_max_tokens_is_honoured_by_the_offline_model(live, world, committed_db):
    completion = _client(live, world.alpha.keys["member"]).chat.completions.create(
        model=FAST, messages=[{"role": "user", "content": "one two three four five"}], max_tokens=3
    )

    assert completion.choices[0].message.content == "Offline model. You "
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3


def test_the_upstream_receives_the_requests_parameters_capped(live, world, upstream, committed_db):
    upstream.reset()
    upstream.reply("fine")
    _client(live, world.alpha.keys["member"]).chat.completions.create(
        model=UPSTREAM,
        messages=[{"role": "user", "content": "go"}],
        temperature=0.3,
        top_p=0.9,
        seed=7,
        stop=["END"],
        presence_penalty=0.5,
        max_completion_tokens=5000,  # above the configuration's 100
    )

    sent = upstream.requests[-1].body
    assert (sent["temperature"], sent["top_p"], sent["seed"], sent["stop"]) == (
        0.3,
        0.9,
        7,
        ["END"],
    )
    assert (sent["presence_penalty"], sent["max_tokens"]) == (0.5, 100)


def test_response_format_reaches_the_upstream(live, world, upstream, committed_db):
    upstream.reset()
    upstream.reply('{"ok": true}')
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "R", "schema": {"type": "object"}, "strict": True},
    }
    completion = _client(live, world.alpha.keys["member"]).chat.completions.create(
        model=UPSTREAM, messages=[{"role": "user", "content": "go"}], response_format=fmt
    )

    assert upstream.requests[-1].body["response_format"] == fmt
    assert json.loads(completion.choices[0].message.content) == {"ok": True}


def test_json_schema_answers_parse_with_the_official_client(live, world, committed_db):
    class City(BaseModel):
        name: str
        population: int
        capital: bool

    parsed = _client(live, world.alpha.keys["member"]).chat.completions.parse(
        model=FAST, messages=[{"role": "user", "content": "Paris"}], response_format=City
    )

    # The offline model fills every string with its reply, every number with the minimum.
    assert parsed.choices[0].message.parsed == City(
        name="Offline model. You said: Paris", population=0, capital=False
    )


# --- the client's own tools ---------------------------------------------------------------------


def test_a_client_tool_call_ends_the_turn_and_its_result_continues_it(live, world, committed_db):
    client = _client(live, world.alpha.keys["member"])
    messages = [{"role": "user", "content": ASK}]

    first = client.chat.completions.create(model=TOOLS, messages=messages, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    second = client.chat.completions.create(model=TOOLS, messages=messages, tools=[WEATHER])

    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather",
        {"city": "Paris"},
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "The get_weather tool returned: sunny, 21 C."


def test_client_tool_calls_stream_too(live, world, committed_db):
    client = _client(live, world.alpha.keys["member"])

    chunks = list(
        client.chat.completions.create(
            model=TOOLS, messages=[{"role": "user", "content": ASK}], tools=[WEATHER], stream=True
        )
    )

    calls = [c for chunk in chunks for c in (chunk.choices[0].delta.tool_calls or [])]
    assert [(c.index, c.function.name) for c in calls] == [(0, "get_weather")]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_the_orchestrators_own_tools_still_run_on_the_server(live, world, committed_db):
    completion = _client(live, world.alpha.keys["member"]).chat.completions.create(
        model=TOOLS,
        messages=[{"role": "user", "content": '/tool calculator {"expression": "6*7"}'}],
        tools=[WEATHER],
    )

    assert completion.choices[0].finish_reason == "stop"
    assert "42" in completion.choices[0].message.content


def test_tool_choice_none_offers_no_client_tool(live, world, committed_db):
    completion = _client(live, world.alpha.keys["member"]).chat.completions.create(
        model=TOOLS,
        messages=[{"role": "user", "content": ASK}],
        tools=[WEATHER],
        tool_choice="none",
    )

    # The offline model asked for a tool nobody offers: the server answers it as unknown.
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.tool_calls is None


# --- LangChain and the OpenAI Agents SDK ---------------------------------------------------------


def _chat_model(live, key: str, model: str):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=model, base_url=f"{live.base}/v1", api_key=key, max_retries=0, timeout=20
    )


def test_langchain_bind_tools_gets_the_call_and_answers_from_its_result(live, world, committed_db):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    model = _chat_model(live, world.alpha.keys["member"], TOOLS).bind_tools([get_weather])
    history = [HumanMessage(ASK)]
    asked = model.invoke(history)
    call = asked.tool_calls[0]
    history += [asked, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    answered = model.invoke(history)

    assert (call["name"], call["args"]) == ("get_weather", {"city": "Paris"})
    assert answered.content == "The get_weather tool returned: sunny in Paris."


def test_langchain_with_structured_output(live, world, committed_db):
    class Answer(BaseModel):
        text: str
        confidence: float

    structured = _chat_model(live, world.alpha.keys["member"], FAST).with_structured_output(Answer)

    assert structured.invoke("tell me") == Answer(
        text="Offline model. You said: tell me", confidence=0
    )


async def test_the_agents_sdk_runs_an_orchestrator_as_its_model(live, world, committed_db):
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    ran: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"rain in {city}"

    client = openai.AsyncOpenAI(
        base_url=f"{live.base}/v1", api_key=world.alpha.keys["member"], max_retries=0
    )
    agent = Agent(
        name="weather",
        instructions="Answer with the tool.",
        model=OpenAIChatCompletionsModel(model=TOOLS, openai_client=client),
        tools=[get_weather],
    )

    result = await Runner.run(agent, ASK)

    assert ran == ["Paris"]
    assert result.final_output == "The get_weather tool returned: rain in Paris."


def test_a_framework_that_cannot_honour_a_parameter_refuses_it(
    live, world, upstream, committed_db, settings
):
    from django_tenants.utils import schema_context

    from orchestrators.models import LLMConfig, OrchestratorInstance
    from orchestrators.services import orchestrator_create
    from orchestrators.tasks import instance_build

    settings.CADENCE_EGRESS_ALLOWED_HOSTS = ["127.0.0.1"]  # the build checks the upstream's URL
    with schema_context("org_alpha"):
        config = LLMConfig.objects.get(name="oai-upstream")
        instance = orchestrator_create(
            slug="oai-graph", name="Graph", llm_config=config, framework="langgraph"
        )
    try:
        assert (
            instance_build(
                schema_name="org_alpha",
                instance_id=str(instance.id),
                expected_hash=instance.config_hash,
            )
            == "ready"
        )
        upstream.reset()
        asked = {"model": "oai-graph", "messages": [{"role": "user", "content": "x"}]}
        with_tools = _post(live, world, asked | {"tools": [WEATHER]})
        with_temperature = _post(live, world, asked | {"temperature": 0.1})

        assert (with_tools.status_code, with_tools.json()["error"]["param"]) == (400, "tools")
        assert with_temperature.status_code == 400
        assert with_temperature.json()["error"]["code"] == "unsupported_parameter"
        assert with_temperature.json()["error"]["param"] == "temperature"
        # Refused before any model call.
        assert [r for r in upstream.requests if r.method == "POST"] == []
    finally:
        with schema_context("org_alpha"):
            OrchestratorInstance.objects.filter(slug="oai-graph").delete()
