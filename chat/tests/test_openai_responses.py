"""`POST /v1/responses` through the clients people use: the official `openai` client's
`responses.create` (streamed and not) and the OpenAI Agents SDK's default model
(`OpenAIResponsesModel`), against a live Cadence server (the fixtures of test_openai_api).

The offline model answers `/tool <name> <json>` with a call of that tool, so function tools,
`function_call_output` and `previous_response_id` are exercised with no model.
"""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest
from django_tenants.utils import schema_context
from pydantic import BaseModel

from chat.tests.test_openai_api import BRAVO, FAST, TOOLS, UPSTREAM, live, upstream  # noqa: F401

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
ASK = '/tool get_weather {"city": "Paris"}'


def _client(live, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.base}/v1", api_key=key, max_retries=0, timeout=20)


def _post(live, key: str, body) -> httpx.Response:
    return httpx.post(
        f"{live.base}/v1/responses",
        content=body if isinstance(body, bytes) else json.dumps(body),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=20,
    )


def _reply(text: str) -> str:
    return f"Offline model. You said: {text}"


def _stored(response_id: str):
    from chat.models import StoredResponse

    with schema_context("org_alpha"):
        return (
            StoredResponse.objects.select_related("conversation")
            .filter(pk=uuid.UUID(hex=response_id.removeprefix("resp_")))
            .first()
        )


def _messages(conversation_id) -> list[tuple[str, str, str]]:
    from chat.models import Message

    with schema_context("org_alpha"):
        return list(
            Message.objects.filter(conversation_id=conversation_id)
            .order_by("seq")
            .values_list("role", "content", "tool_call_id")
        )


# --- text, streamed and not ---------------------------------------------------------------------


def test_a_response_is_text_with_usage_and_is_stored_as_a_conversation_turn(
    live, world, committed_db
):
    response = _client(live, world.alpha.keys["member"]).responses.create(
        model=FAST, input="hello there", instructions="Be brief.", metadata={"k": "v"}
    )

    assert response.object == "response" and response.status == "completed"
    assert response.id.startswith("resp_") and response.model == FAST
    assert response.output_text == _reply("hello there")
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.usage.output_tokens == len(_reply("hello there").split())
    assert response.usage.total_tokens == (
        response.usage.input_tokens + response.usage.output_tokens
    )
    assert response.metadata == {"k": "v"} and response.instructions == "Be brief."
    assert response.previous_response_id is None and response.error is None
    stored = _stored(response.id)
    assert stored.status == "completed"
    assert str(stored.owner_api_key_id) == world.alpha.key_ids["member"]
    # The instructions are the turn's own, not the conversation's.
    assert _messages(stored.conversation_id) == [
        ("user", "hello there", ""),
        ("assistant", _reply("hello there"), ""),
    ]


def test_a_streamed_response_sends_openais_events_in_order(live, world, committed_db):
    events = list(
        _client(live, world.alpha.keys["member"]).responses.create(
            model=FAST, input="stream me", stream=True
        )
    )

    kinds = [e.type for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == _reply("stream me")
    assert events[-1].response.output_text == text
    assert events[-1].response.status == "completed"
    assert events[0].response.status == "in_progress"
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == text and done.item_id == events[-1].response.output[0].id


def test_the_stream_helper_of_the_official_client_parses_it(live, world, committed_db):
    client = _client(live, world.alpha.keys["member"])

    with client.responses.stream(model=FAST, input="helper") as stream:
        final = stream.get_final_response()

    assert final.output_text == _reply("helper")


def test_max_output_tokens_makes_an_incomplete_response(live, world, committed_db):
    words = " ".join(f"w{i}" for i in range(40))

    response = _client(live, world.alpha.keys["member"]).responses.create(
        model=FAST, input=words, max_output_tokens=16
    )

    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 16


def test_store_false_is_neither_kept_nor_continued(live, world, committed_db):
    client = _client(live, world.alpha.keys["member"])

    response = client.responses.create(model=FAST, input="forget me", store=False)

    assert response.output_text == _reply("forget me")
    assert _stored(response.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model=FAST, input="again", previous_response_id=response.id)
    assert info.value.body["param"] == "previous_response_id"


def test_retrieve_returns_the_stored_response(live, world, committed_db):
    client = _client(live, world.alpha.keys["member"])
    created = client.responses.create(model=FAST, input="keep me")

    again = client.responses.retrieve(created.id)

    assert again.model_dump() == created.model_dump()


# --- previous_response_id -----------------------------------------------------------------------


def test_previous_response_id_continues_the_conversation(live, world, committed_db):
    client = _client(live, world.alpha.keys["member"])
    first = client.responses.create(model=FAST, input="my name is Ada")

    second = client.responses.create(
        model=FAST, input="what is my name?", previous_response_id=first.id
    )

    assert second.previous_response_id == first.id
    assert second.output_text == _reply("what is my name?")
    one, two = _stored(first.id), _stored(second.id)
    assert two.conversation_id == one.conversation_id and two.previous_id == one.id
    assert [m[:2] for m in _messages(one.conversation_id)] == [
        ("user", "my name is Ada"),
        ("assistant", _reply("my name is Ada")),
        ("user", "what is my name?"),
        ("assistant", _reply("what is my name?")),
    ]
    # The run saw the first turn as its history.
    from engine.models import Run

    with schema_context("org_alpha"):
        run = Run.objects.get(pk=two.id)
    assert run.input["history_messages"] == 2
    assert str(run.conversation_id) == str(one.conversation_id)


def test_a_fork_keeps_each_branchs_history(live, world, committed_db):
    from engine.models import Run

    client = _client(live, world.alpha.keys["member"])
    root = client.responses.create(model=FAST, input="root")
    left = client.responses.create(model=FAST, input="left", previous_response_id=root.id)

    right = client.responses.create(model=FAST, input="right", previous_response_id=root.id)
    after = client.responses.create(model=FAST, input="after", previous_response_id=right.id)

    assert _stored(left.id).conversation_id == _stored(root.id).conversation_id
    assert _stored(right.id).conversation_id != _stored(root.id).conversation_id
    with schema_context("org_alpha"):
        histories = {
            str(r.id): r.input["history_messages"]
            for r in Run.objects.filter(pk__in=[_stored(right.id).id, _stored(after.id).id])
        }
    # root's turn, then root's and right's: never left's.
    assert histories == {str(_stored(right.id).id): 2, str(_stored(after.id).id): 4}


# --- function tools -----------------------------------------------------------------------------


def test_a_function_call_round_trip_with_previous_response_id(live, world, committed_db):
    client = _client(live, world.alpha.keys["member"])

    first = client.responses.create(model=TOOLS, input=ASK, tools=[WEATHER])
    call = first.output[-1]
    second = client.responses.create(
        model=TOOLS,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
    )

    assert first.status == "completed"
    assert (call.type, call.name, json.loads(call.arguments)) == (
        "function_call",
        "get_weather",
        {"city": "Paris"},
    )
    assert call.id.startswith("fc_") and call.status == "completed"
    assert second.output_text == "The get_weather tool returned: sunny."
    conversation = _stored(first.id).conversation_id
    assert _stored(second.id).conversation_id == conversation
    assert [(role, tool_call_id) for role, _, tool_call_id in _messages(conversation)] == [
        ("user", ""),
        ("assistant", ""),
        ("tool", call.call_id),
        ("assistant", ""),
    ]
    from chat.models import Message

    with schema_context("org_alpha"):
        asked = Message.objects.get(conversation_id=conversation, seq=_stored(first.id).last_seq)
    # Stored as every chat trigger stores calls (the chat page shows them), marked the client's.
    assert asked.tool_calls == [
        {"id": call.call_id, "name": "get_weather", "arguments": {"city": "Paris"}, "client": True}
    ]


def test_function_calls_stream_their_argument_events(live, world, committed_db):
    events = list(
        _client(live, world.alpha.keys["member"]).responses.create(
            model=TOOLS, input=ASK, tools=[WEATHER], stream=True
        )
    )

    kinds = [e.type for e in events]
    assert kinds[-5:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"city": "Paris"}
    assert events[-1].response.output[-1].name == "get_weather"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_the_whole_history_without_previous_response_id(live, world, committed_db):
    client = _client(live, world.alpha.keys["member"])
    first = client.responses.create(model=TOOLS, input=ASK, tools=[WEATHER], store=False)
    call = first.output[-1]

    second = client.responses.create(
        model=TOOLS,
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": ASK}]},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "cloudy"},
        ],
        tools=[WEATHER],
        store=False,
    )

    assert second.output_text == "The get_weather tool returned: cloudy."


def test_a_call_left_unanswered_is_refused(live, world, committed_db):
    client = _client(live, world.alpha.keys["member"])
    first = client.responses.create(model=TOOLS, input=ASK, tools=[WEATHER])

    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(
            model=TOOLS, input="never mind", previous_response_id=first.id, tools=[WEATHER]
        )

    assert info.value.body["param"] == "input"
    assert first.output[-1].call_id in info.value.body["message"]
    # Nothing was stored for the refused request.
    assert len(_messages(_stored(first.id).conversation_id)) == 2


def test_an_output_for_no_call_is_refused(live, world):
    response = _post(
        live,
        world.alpha.keys["member"],
        {
            "model": TOOLS,
            "input": [{"type": "function_call_output", "call_id": "call_x", "output": "?"}],
        },
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


def test_langchain_chat_openai_on_the_responses_api(live, world, committed_db):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"snow in {city}"

    model = ChatOpenAI(
        model=TOOLS,
        base_url=f"{live.base}/v1",
        api_key=world.alpha.keys["member"],
        use_responses_api=True,
        max_retries=0,
        timeout=20,
    ).bind_tools([get_weather])
    history = [HumanMessage(ASK)]
    asked = model.invoke(history)
    call = asked.tool_calls[0]
    history += [asked, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    answered = model.invoke(history)

    assert (call["name"], call["args"]) == ("get_weather", {"city": "Paris"})
    assert answered.text() == "The get_weather tool returned: snow in Paris."


# --- what reaches the model, and its failures ---------------------------------------------------


def test_the_upstream_receives_instructions_parameters_and_format(
    live, world, upstream, committed_db
):
    upstream.reset()
    upstream.reply('{"ok": true}')
    fmt = {"type": "json_schema", "name": "R", "schema": {"type": "object"}, "strict": True}

    response = _client(live, world.alpha.keys["member"]).responses.create(
        model=UPSTREAM,
        input="go",
        instructions="Answer in JSON.",
        temperature=0.3,
        top_p=0.9,
        max_output_tokens=5000,  # above the configuration's 100
        text={"format": fmt},
    )

    sent = upstream.requests[-1].body
    # The configuration's system prompt, then the request's instructions.
    assert sent["messages"][1] == {"role": "system", "content": "Answer in JSON."}
    assert sent["messages"][-1] == {"role": "user", "content": "go"}
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.3, 0.9, 100)
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "R", "schema": {"type": "object"}, "strict": True},
    }
    assert json.loads(response.output_text) == {"ok": True}
    assert response.text.format.type == "json_schema" and response.temperature == 0.3


def test_a_model_failure_is_an_http_error_and_a_failed_stored_response(
    live, world, upstream, committed_db
):
    from chat.models import StoredResponse

    upstream.reset()
    upstream.error(500, message="boom")
    with schema_context("org_alpha"):
        before = set(StoredResponse.objects.values_list("id", flat=True))

    with pytest.raises(openai.APIStatusError) as info:
        _client(live, world.alpha.keys["member"]).responses.create(model=UPSTREAM, input="go")

    assert info.value.status_code == 502
    assert info.value.body["code"] == "llm_unavailable"
    with schema_context("org_alpha"):
        (failed,) = StoredResponse.objects.exclude(id__in=before)
    assert failed.status == "failed" and failed.body["error"]["code"] == "llm_unavailable"


def test_a_failure_mid_stream_ends_with_response_failed(live, world, upstream, committed_db):
    upstream.reset()
    upstream.reply("one two three four", error_after=2)

    events = list(
        _client(live, world.alpha.keys["member"]).responses.create(
            model=UPSTREAM, input="go", stream=True
        )
    )

    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed"
    assert events[-1].response.error.code == "llm_error"
    assert "response.completed" not in [e.type for e in events]


# --- structured output --------------------------------------------------------------------------


def test_structured_output_parses_with_the_official_client(live, world, committed_db):
    class City(BaseModel):
        name: str
        population: int
        capital: bool

    parsed = _client(live, world.alpha.keys["member"]).responses.parse(
        model=FAST, input="Paris", text_format=City
    )

    assert parsed.output_parsed == City(
        name="Offline model. You said: Paris", population=0, capital=False
    )
    assert parsed.text.format.type == "json_schema"


# --- the OpenAI Agents SDK ----------------------------------------------------------------------


async def test_the_agents_sdk_default_model_runs_an_agent_with_a_tool(live, world, committed_db):
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

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
        model=OpenAIResponsesModel(model=TOOLS, openai_client=client),
        tools=[get_weather],
    )

    result = await Runner.run(agent, ASK)
    streamed = Runner.run_streamed(agent, ASK)
    async for _ in streamed.stream_events():
        pass

    assert ran == ["Paris", "Paris"]
    assert result.final_output == "The get_weather tool returned: rain in Paris."
    assert streamed.final_output == "The get_weather tool returned: rain in Paris."


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"temperature": 5}, "temperature", "decimal_above_max_value"),
        ({"temperature": "hot"}, "temperature", "invalid_type"),
        ({"top_p": 1.5}, "top_p", "decimal_above_max_value"),
        ({"max_output_tokens": 3}, "max_output_tokens", "integer_below_min_value"),
        ({"max_output_tokens": "9"}, "max_output_tokens", "invalid_type"),
        ({"stream": "yes"}, "stream", "invalid_type"),
        ({"store": 1}, "store", "invalid_type"),
        ({"metadata": {"k": 1}}, "metadata", "invalid_value"),
        ({"user": ["x"]}, "user", "invalid_type"),
        ({"instructions": 7}, "instructions", "invalid_type"),
        ({"previous_response_id": 7}, "previous_response_id", "invalid_type"),
        ({"frobnicate": True}, "frobnicate", "unknown_parameter"),
        ({"messages": []}, "messages", "unknown_parameter"),
        ({"reasoning": {"effort": "high"}}, "reasoning", "unsupported_parameter"),
        ({"background": True}, "background", "unsupported_parameter"),
        ({"text": {"format": {"type": "xml"}}}, "text.format", "invalid_value"),
        ({"text": {"format": {"type": "json_schema"}}}, "text.format.name", None),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_value"),
        ({"tools": [WEATHER | {"function": {}}]}, "tools[0].function", "unknown_parameter"),
        ({"tool_choice": {"type": "function", "name": "nope"}}, "tool_choice", "invalid_value"),
        ({"input": 7}, "input", None),
        ({"input": []}, "input", None),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", None),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, None, None),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type", None),
        ({"input": [{"role": "assistant", "content": "x"}]}, "input[0]", None),
    ],
)
def test_bad_parameters_get_openais_400(live, world, extra, param, code):
    response = _post(live, world.alpha.keys["member"], {"model": FAST, "input": "x"} | extra)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code


def test_nul_bytes_deep_json_and_garbage_are_400s(live, world):
    key = world.alpha.keys["member"]
    nul = _post(live, key, {"model": FAST, "input": "a\u0000b"})
    deep = _post(live, key, b'{"model": "x", "input": ' + b"[" * 200 + b"]" * 200 + b"}")
    garbage = _post(live, key, b"{not json")
    listed = _post(live, key, b"[1, 2]")

    assert [r.status_code for r in (nul, deep, garbage, listed)] == [400, 400, 400, 400]
    for response in (nul, deep, garbage, listed):
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert nul.json()["error"]["param"] == "input"


def test_nulls_are_not_given(live, world, committed_db):
    body = {
        "model": FAST,
        "input": "nulls",
        **dict.fromkeys(
            ("instructions", "temperature", "top_p", "max_output_tokens", "tools", "text")
        ),
        "store": False,
        "truncation": "disabled",
        "include": [],
        "parallel_tool_calls": True,
    }

    assert _post(live, world.alpha.keys["member"], body).status_code == 200


# --- who may ------------------------------------------------------------------------------------


def test_a_bad_key_a_viewer_and_another_organizations_model_are_refused(live, world):
    body = {"model": FAST, "input": "x"}

    bad = _post(live, "ck_not_a_key", body)
    viewer = _post(live, world.alpha.keys["viewer"], body)
    foreign = _post(live, world.bravo.keys["member"], body)
    anonymous = httpx.post(f"{live.base}/v1/responses", json=body, timeout=20)

    assert (bad.status_code, bad.json()["error"]["code"]) == (401, "invalid_api_key")
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "invalid_api_key")
    assert (viewer.status_code, viewer.json()["error"]["code"]) == (403, "insufficient_role")
    assert (foreign.status_code, foreign.json()["error"]["code"]) == (404, "model_not_found")


def test_another_keys_or_organizations_response_is_404(live, world, committed_db):
    from chat.models import StoredResponse

    mine = _client(live, world.alpha.keys["member"]).responses.create(model=FAST, input="mine")
    stored_before = _messages(_stored(mine.id).conversation_id)
    with schema_context("org_alpha"):
        count = StoredResponse.objects.count()

    for key, model in (
        (world.alpha.keys["admin"], FAST),  # same organization, another key
        (world.bravo.keys["member"], BRAVO),  # another organization
    ):
        client = _client(live, key)
        with pytest.raises(openai.NotFoundError) as info:
            client.responses.create(model=model, input="theirs", previous_response_id=mine.id)
        assert info.value.body["code"] == "previous_response_not_found"
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(mine.id)

    assert _messages(_stored(mine.id).conversation_id) == stored_before
    with schema_context("org_alpha"):
        assert StoredResponse.objects.count() == count
    viewer = httpx.get(
        f"{live.base}/v1/responses/{mine.id}",
        headers={"Authorization": f"Bearer {world.alpha.keys['viewer']}"},
        timeout=20,
    )
    assert viewer.status_code == 404


def test_the_plans_rate_limit_applies(live, world, committed_db):
    from tenants import ratelimit
    from tenants.limits.enforce import ORG_PRINCIPAL
    from tenants.models import Organization, Plan

    org = Organization.objects.get(slug="alpha")
    bucket = ratelimit.bucket_key(str(org.public_id), ORG_PRINCIPAL, "requests")
    previous_plan = org.plan_id
    plan, _ = Plan.objects.update_or_create(
        slug="resp-tiny", defaults={"name": "Tiny", "requests_per_minute": 1}
    )
    Organization.objects.filter(pk=org.pk).update(plan=plan)
    ratelimit.clear(bucket)
    client = _client(live, world.alpha.keys["member"])
    try:
        client.responses.create(model=FAST, input="one", store=False)
        with pytest.raises(openai.RateLimitError) as info:
            client.responses.create(model=FAST, input="two", store=False)
        assert info.value.code == "rate_limit_exceeded"
        assert int(info.value.response.headers["retry-after"]) >= 1
    finally:
        Organization.objects.filter(pk=org.pk).update(plan_id=previous_plan)
        ratelimit.clear(bucket)
        Plan.objects.filter(slug="resp-tiny").delete()


def test_the_keys_token_budget_applies(live, world, committed_db):
    from tenants.limits.models import ApiKeyLimits

    key_id = world.alpha.key_ids["owner"]
    ApiKeyLimits.objects.create(api_key_id=key_id, tokens_per_minute=1)
    try:
        with pytest.raises(openai.APIStatusError) as info:
            _client(live, world.alpha.keys["owner"]).responses.create(
                model=FAST, input="too many tokens for one a minute"
            )
        streamed = list(
            _client(live, world.alpha.keys["owner"]).responses.create(
                model=FAST, input="too many tokens again", stream=True
            )
        )
    finally:
        ApiKeyLimits.objects.filter(api_key_id=key_id).delete()

    assert (info.value.status_code, info.value.body["code"]) == (402, "budget_exceeded")
    assert streamed[-1].type == "response.failed"
    assert streamed[-1].response.error.code == "budget_exceeded"


def test_malformed_and_unknown_ids_are_404(live, world):
    client = _client(live, world.alpha.keys["member"])

    for response_id in ("resp_nothex", f"resp_{uuid.uuid4().hex}", "x" * 300):
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response_id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=FAST, input="x", previous_response_id="resp_nothex")
