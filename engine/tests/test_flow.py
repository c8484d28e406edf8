from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field
from importlib import resources

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Cadence, MergeConflict, NoteError, Score
from engine.flow import (
    FLOW_SCHEMA,
    FlowIssue,
    FlowValidationError,
    NoteRegistry,
    build_cadence,
    canonical_json,
    check_flow,
    compile_condition,
    flow_hash,
    validate_flow,
)


@dataclass
class Order(Score):
    tier: str = "basic"
    total: float = 0.0
    trail: list = field(default_factory=list)
    payment: str = ""
    attempts: int = 0
    handled: str = ""


def registry() -> NoteRegistry:
    reg = NoteRegistry()

    @reg.note
    async def validate(score: Order) -> None:
        score.trail.append("validate")

    @reg.note
    def price(score: Order) -> None:
        score.total = 10.0

    @reg.note
    async def fetch_a(score: Order) -> None:
        score.trail.append("a")

    @reg.note
    async def fetch_b(score: Order) -> None:
        score.trail.append("b")

    @reg.note
    def express(score: Order) -> None:
        score.trail.append("express")

    @reg.note
    def standard(score: Order) -> None:
        score.trail.append("standard")

    @reg.note
    async def charge(score: Order) -> None:
        score.payment = "charged"

    @reg.note
    async def flaky(score: Order) -> None:
        score.attempts += 1
        raise ConnectionError("down")

    @reg.note
    def explode(score: Order) -> None:
        raise ValueError("boom")

    @reg.condition
    def is_premium(score: Order) -> bool:
        return score.tier == "gold"

    @reg.merge
    def keep_payment(parent: Order, child: Order) -> None:
        parent.payment = f"{child.payment} via child"

    @reg.handler
    def note_error(score: Order, error: Exception) -> None:
        score.handled = type(error).__name__

    return reg


CHECKOUT = {
    "name": "checkout",
    "steps": [
        {"then": "validate"},
        {"then": "price", "note": "price", "timeout": 5},
        {"sync": "enrich", "notes": ["fetch_a", "fetch_b"], "merge": "smart_merge"},
        {
            "split": "route",
            "condition": "is_premium",
            "if_true": ["express"],
            "if_false": ["standard"],
        },
        {
            "split": "route2",
            "condition": {"field": "total", "op": "ge", "value": 10},
            "if_true": ["express"],
        },
        {"child": "pay", "cadence": "payment", "merge": "keep_payment"},
        {"sequence": "finish", "notes": ["validate", {"note": "validate"}]},
    ],
    "cadences": {"payment": {"steps": [{"then": "charge"}]}},
}


def test_the_schema_file_and_constant_agree_and_the_schema_is_valid():
    text = resources.files("engine.flow").joinpath("flow.schema.json").read_text()
    assert json.loads(text) == FLOW_SCHEMA
    jsonschema.Draft202012Validator.check_schema(FLOW_SCHEMA)


def test_a_valid_flow_has_no_issues_and_builds_a_working_cadence():
    reg = registry()
    assert validate_flow(CHECKOUT, reg) == []
    cadence = build_cadence(CHECKOUT, reg, Order(tier="gold"))
    assert isinstance(cadence, Cadence)
    result = asyncio.run(cadence.run())
    assert result.trail == ["validate", "a", "b", "express", "express", "validate", "validate"]
    assert (result.total, result.payment) == (10.0, "charged via child")


def test_the_false_branch_and_text_input():
    cadence = build_cadence(json.dumps(CHECKOUT), registry(), Order(tier="basic"))
    result = asyncio.run(cadence.run())
    assert result.trail[3] == "standard"


def test_every_error_is_reported_with_its_exact_path():
    flow = {
        "name": "broken",
        "steps": [
            {"then": "missing_note"},
            {"then": "price", "timeout": "soon"},
            {"sync": "empty", "notes": []},
            {
                "split": "s",
                "condition": "no_such_condition",
                "if_true": ["validate", {"note": "ghost"}],
            },
            {"split": "s2", "condition": {"field": "total", "op": "gt"}, "if_true": ["validate"]},
            {"child": "c", "cadence": "nowhere"},
            {"sync": "g", "notes": ["validate"], "merge": "mystery"},
            {"dance": "x"},
            {"then": "validate", "sync": "x"},
            {"then": "validate", "retry": {"max_attempts": 0, "backoff": "random"}, "typo": 1},
            {"then": "validate", "fallback": {"handler": "nope", "default": 1}},
        ],
        "on_error": {"handler": "unknown_handler"},
    }
    issues = validate_flow(flow, registry())
    assert [(i.path, i.code) for i in issues] == [
        ("/on_error/handler", "unknown_handler"),
        ("/steps/0/then", "unknown_note"),
        ("/steps/1/timeout", "wrong_type"),
        ("/steps/10/fallback", "conflicting_fallback"),
        ("/steps/10/fallback/handler", "unknown_handler"),
        ("/steps/2/notes", "empty_group"),
        ("/steps/3/condition", "unknown_condition"),
        ("/steps/3/if_true/1/note", "unknown_note"),
        ("/steps/4/condition", "missing_value"),
        ("/steps/5/cadence", "unknown_cadence"),
        ("/steps/6/merge", "unknown_merge"),
        ("/steps/7", "unknown_step"),
        ("/steps/8", "several_kinds"),
        ("/steps/9/retry/backoff", "invalid_value"),
        ("/steps/9/retry/max_attempts", "out_of_range"),
        ("/steps/9/typo", "unknown_key"),
    ]
    assert issues[2].message == "'soon' is not of type 'number'"


def test_cycles_of_child_cadences_are_detected_with_the_closing_step():
    flow = {
        "name": "root",
        "steps": [{"child": "first", "cadence": "a"}],
        "cadences": {
            "a": {"steps": [{"child": "to_b", "cadence": "b"}]},
            "b": {"steps": [{"then": "validate"}, {"child": "back", "cadence": "a"}]},
            "self": {"steps": [{"child": "me", "cadence": "self"}]},
        },
    }
    issues = validate_flow(flow)
    assert issues == [
        FlowIssue("/cadences/b/steps/1/cadence", "cycle of child cadences: a -> b -> a", "cycle"),
        FlowIssue(
            "/cadences/self/steps/0/cadence", "cycle of child cadences: self -> self", "cycle"
        ),
    ]


def test_top_level_shape_errors_and_bad_json():
    issues = validate_flow({"steps": [], "extra": 1})
    assert [(i.path, i.code, i.message) for i in issues] == [
        ("/extra", "unknown_key", "unknown key 'extra'"),
        ("/name", "missing_key", "missing required key 'name'"),
        ("/steps", "empty_group", "[] should be non-empty"),
    ]
    assert [(i.path, i.code) for i in validate_flow({"name": "x", "steps": [{"child": "c"}]})] == [
        ("/steps/0/cadence", "missing_key")
    ]
    assert [i.code for i in validate_flow("{not json")] == ["invalid_json"]
    assert [i.code for i in validate_flow([1, 2])] == ["wrong_type"]


def test_without_a_registry_names_are_not_checked():
    assert validate_flow({"name": "x", "steps": [{"then": "anything"}]}) == []


def test_check_flow_raises_with_every_issue_in_details():
    with pytest.raises(FlowValidationError) as info:
        check_flow(
            {"name": "x", "steps": [{"then": "nope"}, {"sync": "g", "notes": []}]}, registry()
        )
    assert info.value.code == "invalid_flow"
    assert info.value.details["issues"] == [
        {"path": "/steps/0/then", "message": "unknown note 'nope'", "code": "unknown_note"},
        {"path": "/steps/1/notes", "message": "[] should be non-empty", "code": "empty_group"},
    ]
    with pytest.raises(FlowValidationError):
        build_cadence({"name": "x", "steps": [{"then": "nope"}]}, registry())


def test_per_note_resilience_options_are_applied(clock):
    flow = {
        "name": "r",
        "steps": [
            {
                "then": "call",
                "note": "flaky",
                "retry": {"max_attempts": 3, "delay": 0.5, "backoff": "fixed"},
                "fallback": {"default": "fallback", "field": "payment"},
            },
            {
                "sync": "g",
                "notes": [{"note": "flaky", "retry": 2, "fallback": {"handler": "note_error"}}],
            },
        ],
    }
    result = asyncio.run(build_cadence(flow, registry(), Order()).run())
    # three attempts in the then step, two more in the sync task (merged back from its copy)
    assert (result.attempts, result.payment, clock.sleeps) == (5, "fallback", [0.5, 0.5, 1.0])
    assert result.handled == "RetryExhaustedError"


def test_on_error_handler_and_child_field_merge_and_default_child_merge():
    flow = {
        "name": "e",
        "steps": [
            {"then": "explode"},
            {"child": "pay", "cadence": "payment", "merge": {"fields": {"payment": "payment"}}},
            {"child": "again", "cadence": "plain"},
        ],
        "on_error": {"handler": "note_error", "stop": False},
        "cadences": {
            "payment": {"steps": [{"then": "charge"}]},
            "plain": {"steps": [{"then": "validate"}]},
        },
    }
    result = asyncio.run(build_cadence(flow, registry(), Order()).run())
    assert (result.handled, result.payment, result.trail) == ("NoteError", "charged", ["validate"])


def test_sync_in_json_conflicts_by_default():
    flow = {"name": "c", "steps": [{"sync": "g", "notes": ["fetch_a", "fetch_b"]}]}
    with pytest.raises(NoteError) as info:
        asyncio.run(build_cadence(flow, registry(), Order()).run())
    assert isinstance(info.value.original_error, MergeConflict)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"field": "tier", "op": "eq", "value": "gold"}, True),
        ({"field": "tier", "op": "in", "value": ["silver", "gold"]}, True),
        ({"field": "total", "op": "lt", "value": 5}, False),
        ({"field": "meta.region", "op": "eq", "value": "eu"}, True),
        ({"field": "meta.missing", "op": "exists"}, False),
        ({"field": "trail", "op": "contains", "value": "x"}, True),
        ({"field": "handled", "op": "falsy"}, True),
        (
            {
                "all": [
                    {"field": "tier", "op": "eq", "value": "gold"},
                    {"not": {"field": "total", "op": "gt", "value": 100}},
                ]
            },
            True,
        ),
        (
            {
                "any": [
                    {"field": "tier", "op": "eq", "value": "x"},
                    {"field": "total", "op": "ge", "value": "text"},
                ]
            },
            False,
        ),
    ],
)
def test_declarative_conditions(spec, expected):
    @dataclass
    class C(Score):
        tier: str = "gold"
        total: float = 10.0
        meta: dict = field(default_factory=lambda: {"region": "eu"})
        trail: list = field(default_factory=lambda: ["x"])
        handled: str = ""

    assert (
        validate_flow({"name": "x", "steps": [{"split": "s", "condition": spec, "if_true": ["n"]}]})
        == []
    )
    assert compile_condition(spec)(C()) is expected


# -- canonical hashing -------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**6), max_value=10**6)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def shuffled(value, rng: random.Random):
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


@settings(max_examples=200)
@given(
    st.dictionaries(st.text(max_size=6), json_values, max_size=6),
    st.integers(0, 2**32),
    st.sampled_from([None, 0, 2, 4]),
)
def test_hash_ignores_key_order_and_whitespace(flow, seed, indent):
    reordered = shuffled(flow, random.Random(seed))
    text = json.dumps(
        reordered, indent=indent, separators=None if indent is not None else (", ", " : ")
    )
    assert flow_hash(text) == flow_hash(flow)
    assert canonical_json(reordered) == canonical_json(flow)


@given(
    st.dictionaries(st.text(max_size=6), json_values, min_size=1, max_size=6),
    st.text(min_size=1, max_size=5),
)
def test_hash_changes_when_the_flow_changes(flow, extra_key):
    changed = dict(flow)
    changed[extra_key + "_x"] = "new value"
    assert flow_hash(changed) != flow_hash(flow)


def test_canonical_json_exact_form():
    flow = {"steps": [{"then": "a", "timeout": 5.0}], "name": "é"}
    assert canonical_json(flow) == '{"name":"é","steps":[{"then":"a","timeout":5}]}'
    assert flow_hash(flow) == flow_hash(
        '{ "name" : "é",\n "steps": [ {"timeout": 5, "then": "a"} ] }'
    )
    assert len(flow_hash(flow)) == 64


def test_referenced_names_lists_what_a_flow_needs():
    from engine.flow import referenced_names

    flow = dict(CHECKOUT, on_error={"handler": "note_error"})
    flow["steps"] = [
        *CHECKOUT["steps"],
        {
            "split": "x",
            "condition": {"all": ["is_premium", {"not": "is_vip"}]},
            "if_true": [{"note": "n", "fallback": {"handler": "h"}}],
        },
    ]
    assert referenced_names(flow) == {
        "notes": {"validate", "price", "fetch_a", "fetch_b", "express", "standard", "charge", "n"},
        "conditions": {"is_premium", "is_vip"},
        "merges": {"keep_payment"},
        "handlers": {"note_error", "h"},
        "cadences": {"payment"},
    }
    assert referenced_names("[]") == {
        "notes": set(),
        "conditions": set(),
        "merges": set(),
        "handlers": set(),
        "cadences": set(),
    }
