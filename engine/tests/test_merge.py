from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import (
    Cadence,
    Changes,
    MergeConflict,
    Score,
    fail_on_conflict,
    last_write_wins,
    smart_merge,
)
from engine.merge import Fork, resolve_strategy


@dataclass
class Bag(Score):
    a: int = 0
    b: int = 0
    c: int = 0
    d: int = 0
    items: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    tags: set = field(default_factory=set)


FIELDS = ["a", "b", "c", "d"]

change_dicts = st.lists(
    st.dictionaries(st.sampled_from(FIELDS), st.integers(min_value=1, max_value=1000), max_size=4),
    max_size=6,
)


def as_changes(dicts: list[dict]) -> list[Changes]:
    return [Changes(d, f"t{i}", i) for i, d in enumerate(dicts)]


@given(change_dicts)
def test_fail_on_conflict_applies_agreeing_changes_and_rejects_different_values(dicts):
    # given a list of per-task changes
    bag = Bag()
    values: dict[str, set[int]] = {}
    writers: dict[str, int] = {}
    for d in dicts:
        for name, value in d.items():
            values.setdefault(name, set()).add(value)
            writers[name] = writers.get(name, 0) + 1
    conflict = any(len(v) > 1 for v in values.values())
    # when merged with the default strategy
    if conflict:
        with pytest.raises(MergeConflict) as info:
            fail_on_conflict(bag, as_changes(dicts))
        # then the conflict names the field, its values and every task that wrote it
        assert len(values[info.value.field]) > 1
        assert set(info.value.values) == values[info.value.field]
        assert len(info.value.note_names) == writers[info.value.field]
    else:
        # tasks writing the same value to a field agree: no conflict (as in the library)
        fail_on_conflict(bag, as_changes(dicts))
        expected = {name: 0 for name in FIELDS}
        for d in dicts:
            expected.update(d)
        assert {name: getattr(bag, name) for name in FIELDS} == expected


@given(change_dicts)
def test_last_write_wins_equals_applying_changes_in_order(dicts):
    bag = Bag()
    last_write_wins(bag, as_changes(dicts))
    expected = {name: 0 for name in FIELDS}
    for d in dicts:
        expected.update(d)
    assert {name: getattr(bag, name) for name in FIELDS} == expected


@given(st.lists(st.integers()), st.lists(st.lists(st.integers(), max_size=5), max_size=5))
def test_smart_merge_extends_lists_in_task_order(base, additions):
    bag = Bag(items=list(base))
    dicts = [{"items": list(base) + extra} for extra in additions if extra]
    smart_merge(bag, as_changes(dicts))
    expected = list(base)
    for d in dicts:
        expected += d["items"][len(base) :]
    assert bag.items == expected


@given(
    st.dictionaries(st.sampled_from("abc"), st.integers(), max_size=3),
    st.lists(
        st.dictionaries(st.sampled_from("defg"), st.integers(), min_size=1, max_size=3), max_size=4
    ),
)
def test_smart_merge_updates_dicts_with_every_tasks_keys(base, updates):
    bag = Bag(meta=dict(base))
    dicts = [{"meta": {**base, **u}} for u in updates]
    smart_merge(bag, as_changes(dicts))
    expected = dict(base)
    for u in updates:
        expected.update(u)
    assert bag.meta == expected


@given(
    st.sets(st.integers(), max_size=4),
    st.lists(st.sets(st.integers(), min_size=1, max_size=4), max_size=4),
)
def test_smart_merge_unions_sets(base, additions):
    bag = Bag(tags=set(base))
    dicts = [{"tags": set(base) | add} for add in additions]
    smart_merge(bag, as_changes(dicts))
    assert bag.tags == set(base).union(*additions) if additions else bag.tags == set(base)


def test_smart_merge_conflicting_scalars_and_rewritten_lists_raise():
    with pytest.raises(MergeConflict) as info:
        smart_merge(Bag(), as_changes([{"a": 1}, {"a": 2}]))
    assert (info.value.field, info.value.note_names) == ("a", ["t0", "t1"])
    with pytest.raises(MergeConflict):
        smart_merge(Bag(items=[1, 2]), as_changes([{"items": [9]}, {"items": [1, 2, 3]}]))


def test_smart_merge_accepts_agreeing_scalars():
    bag = Bag()
    smart_merge(bag, as_changes([{"a": 5}, {"a": 5}]))
    assert bag.a == 5


def test_fork_copies_mutable_fields_and_detects_in_place_changes():
    bag = Bag(items=[1], meta={"k": 1})
    fork = Fork(bag)
    clone = fork.copy()
    clone.items.append(2)
    clone.meta["k"] = 2
    clone.a = 0  # same value: not a change
    assert fork.diff(clone) == {"items": [1, 2], "meta": {"k": 2}}
    assert (bag.items, bag.meta) == ([1], {"k": 1})


def test_custom_merge_callable_receives_changes_with_names():
    received = []

    def my_merge(original: Bag, changes: list[dict]) -> None:
        received.extend(sorted((c.note_name, c.task_index, dict(c)) for c in changes))
        original.a = sum(c.get("a", 0) for c in changes)

    async def one(s: Bag) -> None:
        s.a = 1

    async def two(s: Bag) -> None:
        s.a = 2

    result = asyncio.run(Cadence("m", Bag()).sync("g", [one, two], merge_strategy=my_merge).run())
    assert result.a == 3
    assert received == [("one", 0, {"a": 1}), ("two", 1, {"a": 2})]


def test_last_write_wins_through_a_cadence():
    async def slow(s: Bag) -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        s.a = 1

    async def fast(s: Bag) -> None:
        s.a = 2

    result = asyncio.run(
        Cadence("m", Bag()).sync("g", [slow, fast], merge_strategy="last_write_wins").run()
    )
    assert result.a == 1  # slow finished last


def test_resolve_strategy_names():
    assert resolve_strategy(None) is fail_on_conflict
    assert resolve_strategy("smart_merge") is smart_merge
    with pytest.raises(TypeError):
        resolve_strategy(42)
