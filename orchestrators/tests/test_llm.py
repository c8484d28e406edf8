"""LLM providers: the OpenAI-compatible one against a real local server, and the offline one."""

from __future__ import annotations

import logging
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import openai
import pytest

from engine.resilience import ManualClock
from orchestrators.llm import PROVIDERS, provider_available, provider_for
from orchestrators.llm.anthropic import to_anthropic
from orchestrators.llm.offline import OfflineProvider
from orchestrators.llm.openai_compatible import OpenAICompatibleProvider, retry_after_seconds
from orchestrators.runtime import LLMDelta, LLMError, LLMResult, LLMSettings, ToolCall, Usage

KEY = "sk-test-0123456789abcdef"
USER = [{"role": "user", "content": "Say hello"}]
CLOCK_TOOL = {
    "type": "function",
    "function": {"name": "clock", "description": "time", "parameters": {"type": "object"}},
}


def llm(base_url: str, **overrides: Any) -> LLMSettings:
    values: dict[str, Any] = {
        "provider": "openai_compatible",
        "model": "gpt-test",
        "base_url": base_url,
        "api_key": KEY,
        "timeout": 5.0,
        "max_retries": 2,
        # A fresh circuit per test: breakers are shared per name across the process.
        "config_id": f"test-{uuid.uuid4()}",
    }
    values.update(overrides)
    return LLMSettings(**values)


def provider(settings: LLMSettings, **kwargs: Any) -> OpenAICompatibleProvider:
    kwargs.setdefault("clock", ManualClock())
    kwargs.setdefault("jitter", False)
    kwargs.setdefault("retry_delay", 1.0)
    return OpenAICompatibleProvider(settings, **kwargs)


async def collect(p, messages=USER, tools=None) -> tuple[list[str], LLMResult]:
    deltas: list[str] = []
    result = None
    async for item in p.stream(messages, tools):
        if isinstance(item, LLMDelta):
            assert result is None, "no delta after the result"
            deltas.append(item.content)
        else:
            assert result is None, "exactly one result"
            result = item
    assert result is not None
    return deltas, result


# --- OpenAI-compatible: streaming ----------------------------------------------------------------


async def test_streams_text_deltas_then_one_result(openai_server):
    # Given a scripted three-chunk answer with usage
    openai_server.reply("Hello big world", chunks=["Hel", "lo big", " world"], usage=(12, 3))

    deltas, result = await collect(provider(llm(openai_server.base_url)))

    assert deltas == ["Hel", "lo big", " world"]
    assert result == LLMResult("Hello big world", (), Usage(12, 3), "stop")


async def test_sends_model_messages_key_and_options(openai_server):
    openai_server.reply("ok")
    settings = llm(openai_server.base_url, temperature=0.2, max_tokens=50)

    await collect(provider(settings), tools=[CLOCK_TOOL])

    request = openai_server.last_request
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == "gpt-test"
    assert request.body["messages"] == USER
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["tools"] == [CLOCK_TOOL]
    assert request.body["temperature"] == 0.2
    assert request.body["max_tokens"] == 50


async def test_omits_tools_and_unset_options(openai_server):
    openai_server.reply("ok")

    await collect(provider(llm(openai_server.base_url)))

    assert set(openai_server.last_request.body) == {"model", "messages", "stream", "stream_options"}


async def test_assembles_tool_calls_streamed_in_fragments(openai_server):
    # Given two tool calls whose arguments arrive in four pieces each
    openai_server.tool_calls(
        [
            ("call_a", "clock", {"timezone": "Europe/Paris"}),
            ("call_b", "calculator", {"expression": "2*(3+4)"}),
        ],
        fragments=4,
        usage=(20, 9),
    )

    deltas, result = await collect(provider(llm(openai_server.base_url)), tools=[CLOCK_TOOL])

    assert deltas == []
    assert result == LLMResult(
        "",
        (
            ToolCall("call_a", "clock", {"timezone": "Europe/Paris"}),
            ToolCall("call_b", "calculator", {"expression": "2*(3+4)"}),
        ),
        Usage(20, 9),
        "tool_calls",
    )


async def test_keeps_unparsable_tool_arguments_raw(openai_server):
    openai_server.tool_call("clock", '{"timezone": "Europe/', fragments=2)

    _, result = await collect(provider(llm(openai_server.base_url)))

    assert result.tool_calls == (ToolCall("call_1", "clock", {"_raw": '{"timezone": "Europe/'}),)


# --- OpenAI-compatible: retries ------------------------------------------------------------------


async def test_retries_a_429_honouring_retry_after(openai_server):
    # Given one 429 asking for a 3-second wait, then an answer
    openai_server.error(429, retry_after="3")
    openai_server.reply("after the wait")
    clock = ManualClock()

    deltas, result = await collect(provider(llm(openai_server.base_url), clock=clock))

    assert deltas == ["after ", "the ", "wait"]
    assert result.content == "after the wait"
    assert clock.sleeps == [3.0]
    assert len(openai_server.requests) == 2


async def test_retry_after_is_capped(openai_server):
    openai_server.error(503, retry_after="3600")
    openai_server.reply("ok")
    clock = ManualClock()

    await collect(provider(llm(openai_server.base_url), clock=clock, max_retry_delay=5.0))

    assert clock.sleeps == [5.0]


async def test_500_exhausts_retries_with_exponential_backoff(openai_server):
    for _ in range(3):
        openai_server.error(500)
    clock = ManualClock()

    with pytest.raises(LLMError) as info:
        await collect(provider(llm(openai_server.base_url), clock=clock))

    assert (info.value.code, info.value.status) == ("llm_unavailable", 500)
    assert str(info.value) == "The provider is unavailable (HTTP 500) after 3 attempts."
    assert clock.sleeps == [1.0, 2.0]
    assert len(openai_server.requests) == 3


async def test_429_exhausting_retries_is_rate_limited(openai_server):
    openai_server.error(429, retry_after="0")
    openai_server.error(429, retry_after="0")

    with pytest.raises(LLMError) as info:
        await collect(provider(llm(openai_server.base_url, max_retries=1)))

    assert (info.value.code, info.value.status) == ("llm_rate_limited", 429)
    assert len(openai_server.requests) == 2


async def test_connection_refused_is_unavailable(openai_server):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(LLMError) as info:
        await collect(provider(llm(f"http://127.0.0.1:{port}/v1", max_retries=1)))

    assert info.value.code == "llm_unavailable"
    assert str(info.value) == "Could not reach the provider after 2 attempts."


async def test_never_retries_after_text_was_streamed(openai_server, monkeypatch):
    # Given a stream that fails with a retryable error after its first delta
    p = provider(llm(openai_server.base_url))
    calls = 0

    async def flaky_once(client, messages, tools, options=None):
        nonlocal calls
        calls += 1
        yield LLMDelta("Hel")
        raise openai.APIConnectionError(request=None)  # type: ignore[arg-type]

    monkeypatch.setattr(p, "_once", flaky_once)
    seen: list[str] = []

    with pytest.raises(LLMError) as info:
        async for item in p.stream(USER):
            seen.append(item.content)

    # then the text was not repeated and the call was made once
    assert (seen, calls, info.value.code) == (["Hel"], 1, "llm_unavailable")


# --- OpenAI-compatible: failures -----------------------------------------------------------------


async def test_401_is_auth_failed_without_the_key(openai_server, caplog):
    openai_server.error(
        401, message=f"Incorrect API key provided: {KEY}", type="invalid_request_error"
    )
    caplog.set_level(logging.DEBUG)

    with pytest.raises(LLMError) as info:
        await collect(provider(llm(openai_server.base_url)))

    assert (info.value.code, info.value.status) == ("llm_auth_failed", 401)
    assert str(info.value) == "The provider rejected the API key (HTTP 401)."
    assert len(openai_server.requests) == 1
    assert KEY not in caplog.text
    assert info.value.__cause__ is None


async def test_404_is_model_not_found(openai_server):
    openai_server.error(404, message="The model does not exist")

    with pytest.raises(LLMError) as info:
        await collect(provider(llm(openai_server.base_url, model="gpt-missing")))

    assert (info.value.code, info.value.status) == ("llm_not_found", 404)
    assert str(info.value) == "The provider does not know the model 'gpt-missing' (HTTP 404)."


async def test_400_reports_the_provider_message_scrubbed(openai_server):
    openai_server.error(400, message=f"context too long for key {KEY}")

    with pytest.raises(LLMError) as info:
        await collect(provider(llm(openai_server.base_url)))

    assert info.value.code == "llm_bad_request"
    assert (
        str(info.value)
        == "The provider refused the request (HTTP 400): context too long for key ***"
    )


async def test_slow_first_byte_times_out(openai_server):
    openai_server.reply("late", first_byte_delay=1.0)

    with pytest.raises(LLMError) as info:
        await collect(provider(llm(openai_server.base_url, timeout=0.2)))

    assert (info.value.code, info.value.status) == ("llm_timeout", 504)
    assert str(info.value) == "The provider did not answer within 0.2 s."
    assert len(openai_server.requests) == 1  # a timeout is not retried


async def test_stalled_stream_times_out_after_its_first_deltas(openai_server):
    openai_server.reply("one two", chunk_delay=0.6)
    seen: list[str] = []

    with pytest.raises(LLMError) as info:
        async for item in provider(llm(openai_server.base_url, timeout=0.3)).stream(USER):
            seen.append(item.content)

    assert info.value.code == "llm_timeout"
    assert seen == ["one "]
    assert len(openai_server.requests) == 1


async def test_private_base_url_is_egress_denied(settings):
    settings.CADENCE_EGRESS_ALLOW_PRIVATE = False
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = []

    with pytest.raises(LLMError) as info:
        await collect(provider(llm("http://10.0.0.7:11434/v1")))

    assert (info.value.code, info.value.status) == ("egress_denied", 400)


# --- OpenAI-compatible: circuit breaker ----------------------------------------------------------


async def test_circuit_opens_after_repeated_failures_and_is_shared(openai_server):
    # Given a configuration whose calls failed twice (threshold 2, no retries)
    settings = llm(openai_server.base_url, max_retries=0)
    for _ in range(2):
        openai_server.error(503)
        with pytest.raises(LLMError):
            await collect(provider(settings, failure_threshold=2))
    openai_server.reply("never sent")

    # when any provider of the same configuration is called
    with pytest.raises(LLMError) as info:
        await collect(provider(settings, failure_threshold=2))

    # then it is refused without a request
    assert (info.value.code, info.value.status) == ("llm_circuit_open", 503)
    assert len(openai_server.requests) == 2
    # and another configuration is unaffected
    _, result = await collect(provider(llm(openai_server.base_url)))
    assert result.content == "never sent"


async def test_auth_failures_do_not_open_the_circuit(openai_server):
    settings = llm(openai_server.base_url, max_retries=0)
    for _ in range(2):
        openai_server.error(401)
        with pytest.raises(LLMError):
            await collect(provider(settings, failure_threshold=2))
    openai_server.reply("fine")

    _, result = await collect(provider(settings, failure_threshold=2))

    assert result.content == "fine"


def test_retry_after_header_forms():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    assert retry_after_seconds({"retry-after": "2"}, now) == 2.0
    assert retry_after_seconds({"retry-after": "0.5"}, now) == 0.5
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 2026 12:00:07 GMT"}, now) == 7.0
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 2026 11:00:00 GMT"}, now) == 0.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}, now) == 0.25
    assert retry_after_seconds({"retry-after": "soon"}, now) is None
    assert retry_after_seconds({}, now) is None


# --- offline provider ----------------------------------------------------------------------------


async def test_offline_echoes_the_last_user_message_word_by_word():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "Hello  there"},
    ]

    deltas, result = await collect(OfflineProvider(), messages)

    assert deltas == ["Offline ", "model. ", "You ", "said: ", "Hello  ", "there"]
    assert result == LLMResult(
        "Offline model. You said: Hello  there",
        (),
        Usage(prompt_tokens=6, completion_tokens=6),
        "stop",
    )


async def test_offline_is_deterministic():
    first = await collect(OfflineProvider(), USER)
    second = await collect(OfflineProvider(), USER)

    assert first == second


async def test_offline_tool_command_becomes_a_tool_call():
    messages = [{"role": "user", "content": 'please /tool calculator {"expression": "2*(3+4)"}'}]

    deltas, result = await collect(OfflineProvider(), messages)

    assert deltas == []
    assert result.finish_reason == "tool_calls"
    assert result.content == ""
    assert [(c.name, c.arguments) for c in result.tool_calls] == [
        ("calculator", {"expression": "2*(3+4)"})
    ]
    assert result.tool_calls[0].id.startswith("call_")
    assert result.tool_calls == (await collect(OfflineProvider(), messages))[1].tool_calls


@pytest.mark.parametrize(
    ("text", "arguments"),
    [
        ("/tool clock", {}),
        ("/tool clock not json", {"_raw": "not json"}),
        ("/tool clock [1]", {"_raw": "[1]"}),
    ],
)
async def test_offline_tool_arguments(text, arguments):
    _, result = await collect(OfflineProvider(), [{"role": "user", "content": text}])

    assert result.tool_calls[0].arguments == arguments


async def test_offline_summarises_tool_results():
    messages = [
        {"role": "user", "content": "/tool clock"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "clock", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"time": "12:00"}'},
    ]

    _, result = await collect(OfflineProvider(), messages)

    assert result.content == 'The clock tool returned: {"time": "12:00"}.'
    assert result.finish_reason == "stop"


# --- provider_for --------------------------------------------------------------------------------


def test_provider_for_builds_each_available_provider():
    assert isinstance(provider_for(LLMSettings(provider="offline", model="m")), OfflineProvider)
    built = provider_for(LLMSettings(provider="openai_compatible", model="m", config_id="pf"))
    assert isinstance(built, OpenAICompatibleProvider)
    assert PROVIDERS == ("openai_compatible", "offline", "anthropic")


def test_provider_for_rejects_an_unknown_provider():
    with pytest.raises(LLMError) as info:
        provider_for(LLMSettings(provider="nope", model="m"))

    assert info.value.code == "unknown_provider"
    assert provider_available("nope") is False


def test_anthropic_needs_its_package():
    if provider_available("anthropic"):
        pytest.skip("the anthropic package is installed here")

    with pytest.raises(LLMError) as info:
        provider_for(LLMSettings(provider="anthropic", model="claude"))

    assert info.value.code == "provider_not_installed"


def test_anthropic_translation_of_openai_messages_and_tools():
    # Given an OpenAI-format conversation with a tool round
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Time?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "clock", "arguments": '{"timezone": "UTC"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "12:00"},
    ]

    arguments = to_anthropic(messages, [CLOCK_TOOL])

    assert arguments == {
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Time?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "c1", "name": "clock", "input": {"timezone": "UTC"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "12:00"}],
            },
        ],
        "tools": [{"name": "clock", "description": "time", "input_schema": {"type": "object"}}],
    }


async def test_a_consumer_that_stops_at_the_result_closes_a_half_open_circuit(openai_server):
    # Given a circuit that opened and whose recovery time has passed
    settings = llm(openai_server.base_url, max_retries=0)
    openai_server.error(503)
    with pytest.raises(LLMError):
        await collect(provider(settings, failure_threshold=1, recovery_timeout=0.0))
    openai_server.reply("back")
    p = provider(settings, failure_threshold=1, recovery_timeout=0.0)

    # when the trial call's consumer stops reading once it has the result
    items = p.stream(USER)
    async for item in items:
        if isinstance(item, LLMResult):
            break
    await items.aclose()

    # then the circuit is closed again
    assert p.circuit.state == "closed"


# --- the fake server itself, through the official client -------------------------------------


async def test_fake_server_answers_without_streaming_and_lists_models(openai_server):
    openai_server.models = ["gpt-a", "gpt-b"]
    openai_server.tool_call("clock", {"timezone": "UTC"}, id="call_9", usage=(4, 2))
    client = openai.AsyncOpenAI(base_url=openai_server.base_url, api_key=KEY, max_retries=0)

    models = await client.models.list()
    completion = await client.chat.completions.create(model="gpt-a", messages=USER)
    await client.close()

    assert [m.id for m in models.data] == ["gpt-a", "gpt-b"]
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_9", "clock", '{"timezone": "UTC"}')
    ]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 2)
    assert [r.path for r in openai_server.requests] == ["/v1/models", "/v1/chat/completions"]


async def test_fake_server_answers_the_default_text_when_unscripted(openai_server):
    _, result = await collect(provider(llm(openai_server.base_url)))

    assert result.content == "Hello from the fake server."
    assert result.usage == Usage(prompt_tokens=2, completion_tokens=5)


async def test_error_inside_the_stream_is_not_retried(openai_server):
    # Given an answer that breaks after two chunks with an error payload
    openai_server.reply("one two three", error_after=2)
    seen: list[str] = []

    with pytest.raises(LLMError) as info:
        async for item in provider(llm(openai_server.base_url)).stream(USER):
            seen.append(item.content)

    assert seen == ["one ", "two "]
    assert (info.value.code, info.value.status) == ("llm_error", 502)
    assert str(info.value) == "The provider reported an error: stream broke"
    assert len(openai_server.requests) == 1
