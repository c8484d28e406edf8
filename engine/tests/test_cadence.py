from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from engine import (
    Cadence,
    CadenceError,
    ImmutableScore,
    Interrupt,
    NoteError,
    ParallelNoteError,
    Score,
    Skip,
    note,
)


@dataclass
class S(Score):
    value: int = 0
    log: list = field(default_factory=list)
    status: str = "new"


async def add_one(score: S) -> None:
    score.value += 1
    score.log.append("add_one")


def double(score: S) -> None:
    score.value *= 2
    score.log.append("double")


def test_then_runs_sync_and_async_notes_in_order():
    # given a chain mixing async and sync notes
    cadence = Cadence("chain", S()).then("a", add_one).then("b", double).then("c", add_one)
    # when it runs
    result = asyncio.run(cadence.run())
    # then each note saw the previous note's result
    assert result.value == 3
    assert result.log == ["add_one", "double", "add_one"]
    assert result is cadence.score


def test_run_accepts_an_explicit_score_and_leaves_the_template_alone():
    cadence = Cadence("chain", S()).then("a", add_one)
    result = asyncio.run(cadence.run(S(value=10)))
    assert result.value == 11
    assert cadence.score.value == 0


def test_run_sync_works_outside_and_inside_a_running_loop():
    cadence = Cadence("chain", S()).then("a", add_one)
    assert cadence.run_sync(S(value=1)).value == 2

    async def inside() -> int:
        return cadence.run_sync(S(value=5)).value

    assert asyncio.run(inside()) == 6


def test_run_without_a_score_is_an_error():
    with pytest.raises(CadenceError) as info:
        asyncio.run(Cadence("empty").then("a", add_one).run())
    assert info.value.code == "NO_SCORE"


def test_sequence_runs_its_notes_as_one_measure():
    cadence = Cadence("seq", S()).sequence("both", [add_one, double, add_one])
    result = asyncio.run(cadence.run())
    assert result.value == 3
    assert [m.name for m in cadence.measures] == ["both"]


def test_sequence_failure_names_the_measure_and_the_inner_note():
    def boom(score: S) -> None:
        raise ValueError("bad")

    cadence = Cadence("seq", S()).sequence("group", [add_one, boom])
    with pytest.raises(NoteError) as info:
        asyncio.run(cadence.run())
    # As in the library, note_name is the measure's; the inner note is in the details.
    assert info.value.note_name == "group"
    assert info.value.measure_name == "group"
    assert info.value.details["step"] == "boom"
    assert isinstance(info.value.original_error, ValueError)


def test_sync_merges_distinct_fields_from_async_and_sync_notes():
    async def set_value(score: S) -> None:
        score.value = 42

    def set_status(score: S) -> None:
        score.status = "done"

    cadence = Cadence("par", S()).sync("both", [set_value, set_status])
    result = asyncio.run(cadence.run())
    assert (result.value, result.status, result.log) == (42, "done", [])


def test_sync_tasks_see_isolated_copies():
    seen = []

    async def writer(score: S) -> None:
        score.log.append("writer")
        await asyncio.sleep(0)

    async def reader(score: S) -> None:
        await asyncio.sleep(0)
        seen.append(list(score.log))

    cadence = Cadence("iso", S()).sync("g", [writer, reader])
    result = asyncio.run(cadence.run())
    assert seen == [[]]
    assert result.log == ["writer"]


def test_sync_task_failure_is_a_parallel_note_error_with_its_index():
    async def ok(score: S) -> None:
        score.value = 1

    async def fails(score: S) -> None:
        raise KeyError("missing")

    cadence = Cadence("par", S()).sync("fetch", [ok, fails])
    with pytest.raises(ParallelNoteError) as info:
        asyncio.run(cadence.run())
    error = info.value
    assert (error.group_name, error.task_index, error.note_name) == ("fetch", 1, "fails")
    assert isinstance(error.original_error, KeyError)
    assert cadence.score.value == 0  # nothing merged from a failed group


def test_split_takes_the_true_and_false_branches():
    def is_big(score: S) -> bool:
        return score.value > 5

    def mark_big(score: S) -> None:
        score.status = "big"

    def mark_small(score: S) -> None:
        score.status = "small"

    cadence = Cadence("route", S()).split("route", is_big, [mark_big], [mark_small])
    assert asyncio.run(cadence.run(S(value=10))).status == "big"
    assert asyncio.run(cadence.run(S(value=1))).status == "small"


def test_split_with_async_condition_and_no_false_branch_does_nothing_when_false():
    async def never(score: S) -> bool:
        return False

    cadence = Cadence("route", S()).split("route", never, if_true=[add_one])
    assert asyncio.run(cadence.run()).value == 0


def test_split_parallel_forks_the_branch():
    async def a(score: S) -> None:
        score.value = 7

    async def b(score: S) -> None:
        score.status = "b"

    cadence = Cadence("route", S()).split("route", lambda s: True, [a, b], parallel=True)
    result = asyncio.run(cadence.run())
    assert (result.value, result.status) == (7, "b")


def test_split_condition_failure_names_the_split_and_the_condition():
    def broken(score: S) -> bool:
        raise RuntimeError("no")

    cadence = Cadence("route", S()).split("route", broken, [add_one])
    with pytest.raises(NoteError) as info:
        asyncio.run(cadence.run())
    assert (info.value.note_name, info.value.details["step"]) == ("route", "broken")


@dataclass
class Payment(Score):
    amount: int = 0
    charged: bool = False


def test_child_runs_on_its_own_score_and_merges_back():
    async def charge(score: Payment) -> None:
        score.charged = score.amount > 0

    payment = Cadence("payment", Payment(amount=5)).then("charge", charge)

    def merge_payment(parent: S, child: Payment) -> None:
        parent.status = "paid" if child.charged else "unpaid"

    parent = (
        Cadence("checkout", S())
        .then("a", add_one)
        .child("pay", payment, merge_payment)
        .then("b", add_one)
    )
    result = asyncio.run(parent.run())
    assert (result.value, result.status) == (2, "paid")
    assert payment.score.charged is False  # the child's template score is never mutated


def test_child_without_score_runs_on_a_copy_of_the_parent_and_copies_changes_back():
    child = Cadence("inner").then("a", add_one)
    parent = Cadence("outer", S(value=1)).child("inner", child)
    result = asyncio.run(parent.run())
    assert (result.value, result.log) == (2, ["add_one"])


def test_child_cannot_contain_itself():
    a = Cadence("a", S())
    b = Cadence("b", S()).child("a", a)
    with pytest.raises(ValueError):
        a.child("b", b)
    with pytest.raises(ValueError):
        a.child("self", a)


def test_then_failure_is_a_note_error_named_after_the_measure():
    def boom(score: S) -> None:
        raise ValueError("nope")

    cadence = Cadence("c", S()).then("risky", boom)
    with pytest.raises(NoteError) as info:
        asyncio.run(cadence.run())
    assert info.value.note_name == "risky"
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.code == "NOTE_ERROR"
    assert info.value.to_dict()["code"] == "NOTE_ERROR"
    assert str(info.value) == "[NOTE_ERROR] nope"


def test_on_error_continue_calls_the_handler_and_goes_on():
    handled = []

    def boom(score: S) -> None:
        raise ValueError("x")

    async def handler(score: S, error: Exception) -> None:
        handled.append((error.note_name, type(error.original_error).__name__))

    cadence = (
        Cadence("c", S()).then("risky", boom).on_error(handler, stop=False).then("cleanup", add_one)
    )
    result = asyncio.run(cadence.run())
    assert handled == [("risky", "ValueError")]
    assert result.value == 1


def test_on_error_stop_calls_the_handler_then_ends_the_run():
    handled = []

    def boom(score: S) -> None:
        raise ValueError("x")

    cadence = (
        Cadence("c", S())
        .then("risky", boom)
        .on_error(lambda s, e: handled.append(e.note_name))
        .then("after", add_one)
    )
    # As in the library: a handled failure with stop=True ends the run without raising.
    assert asyncio.run(cadence.run()).value == 0
    assert handled == ["risky"]


def test_skip_stops_the_rest_of_the_run_without_failing_it():
    def skipper(score: S) -> None:
        score.value = 100
        raise Skip("nothing to do")

    cadence = Cadence("c", S()).then("skip", skipper).then("next", add_one)
    assert asyncio.run(cadence.run()).value == 100


def test_interrupt_stops_the_run_only_for_interruptible_notes():
    def stop(score: S) -> None:
        score.status = "stopped"
        raise Interrupt()

    ok = Cadence("c", S()).then("stop", stop, can_interrupt=True).then("never", add_one)
    result = asyncio.run(ok.run())
    assert (result.status, result.value) == ("stopped", 0)

    refused = Cadence("c", S()).then("stop", stop).then("never", add_one)
    with pytest.raises(NoteError):
        asyncio.run(refused.run())


@dataclass(frozen=True)
class Frozen(ImmutableScore):
    count: int = 0
    tag: str = ""


def test_immutable_scores_flow_through_returned_values():
    def inc(score: Frozen) -> Frozen:
        return score.with_field("count", score.count + 1)

    async def tag(score: Frozen) -> Frozen:
        return score.replace(tag="t")

    async def par_tag(score: Frozen) -> Frozen:
        return score.replace(tag="p")

    cadence = Cadence("f", Frozen()).then("inc", inc).then("tag", tag).sync("g", [inc, par_tag])
    result = asyncio.run(cadence.run())
    assert result == Frozen(count=2, tag="p")


def test_note_decorator_returns_a_note_that_cadences_unwrap():
    async def plain(score: S) -> None:
        """Does nothing."""

    wrapped = note(plain)
    assert (wrapped.name, wrapped.description, wrapped.is_async) == ("plain", "Does nothing.", True)
    assert note(name="custom")(plain).__cadence_note__.name == "custom"
    # a cadence calls the function itself, not the Note wrapper
    assert Cadence("c", S()).then("p", wrapped).measures[0].fn is plain


def test_builder_rejects_bad_input():
    with pytest.raises(ValueError):
        Cadence("")
    with pytest.raises(TypeError):
        Cadence("c").then("x", 42)
    with pytest.raises(ValueError):
        Cadence("c").sync("empty", [])
    with pytest.raises(ValueError):
        Cadence("c").sync("g", [add_one], merge_strategy="nope")
    with pytest.raises(TypeError):
        Cadence("c").child("x", object())


def test_describe_gives_the_json_flow_form():
    child = Cadence("inner").then("a", add_one)
    cadence = (
        Cadence("outer", S())
        .then("a", add_one, can_interrupt=True)
        .sequence("s", [add_one, double])
        .sync("g", [add_one, double], merge_strategy="smart_merge")
        .split("r", lambda s: True, [add_one], [double])
        .child("c", child)
    )
    assert cadence.describe() == {
        "name": "outer",
        "steps": [
            {"then": "a", "note": "add_one", "can_interrupt": True},
            {"sequence": "s", "notes": ["add_one", "double"]},
            {"sync": "g", "notes": ["add_one", "double"], "merge": "smart_merge"},
            {"split": "r", "condition": "<lambda>", "if_true": ["add_one"], "if_false": ["double"]},
            {"child": "c", "cadence": "inner"},
        ],
        "cadences": {"inner": {"steps": [{"then": "a", "note": "add_one"}]}},
    }


def test_plain_object_scores_work_too():
    class Bag:
        def __init__(self) -> None:
            self.x = 0
            self.y = 0

    def set_x(bag: Bag) -> None:
        bag.x = 1

    async def set_y(bag: Bag) -> None:
        bag.y = 2

    result = asyncio.run(Cadence("bag", Bag()).sync("g", [set_x, set_y]).run())
    assert (result.x, result.y) == (1, 2)


@pytest.mark.asyncio
async def test_run_awaited_directly_inside_a_pytest_asyncio_loop():
    # given a cadence mixing every construct
    child = Cadence("inner").then("a", add_one)
    cadence = (
        Cadence("all", S())
        .then("a", add_one)
        .sequence("s", [double])
        .sync("g", [add_one])
        .split("r", lambda s: s.value > 100, [double], [add_one])
        .child("c", child)
    )
    # when it is awaited in the test's own loop
    result = await cadence.run()
    # then ((0 + 1) * 2 + 1 + 1) + 1 == 5
    assert result.value == 5


@pytest.mark.asyncio
async def test_concurrent_runs_awaited_with_gather_keep_their_own_scores():
    cadence = Cadence("c", S()).then("a", add_one).sync("g", [double])
    results = await asyncio.gather(*(cadence.run(S(value=i)) for i in range(10)))
    assert [r.value for r in results] == [(i + 1) * 2 for i in range(10)]


def test_a_sync_wrapper_of_an_already_used_async_note_is_treated_as_sync():
    import functools

    async def inner(score: S) -> None:
        score.value += 1

    Cadence("first", S()).then("a", inner)  # the engine has looked at `inner` once

    @functools.wraps(inner)  # copies inner.__dict__, cached flags included
    def wrapper(score: S) -> None:
        score.status = "sync wrapper"

    result = Cadence("second", S()).then("w", wrapper).run_sync()
    assert result.status == "sync wrapper"
