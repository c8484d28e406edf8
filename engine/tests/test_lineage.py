"""Lineage, exact across .then, .sync (copy-on-write branches and their merge), .split and .child:
TracingHooks record what each step read and wrote, engine.lineage says who wrote what."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from engine import Cadence, Score
from engine.lineage import Lineage, LineageError
from engine.tracing import ReadTracked, TracingHooks


@dataclass
class Story(ReadTracked, Score):
    topic: str = ""
    draft: str = ""
    notes: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    verdict: str = ""
    summary: str = ""
    title: str = ""
    published: str = ""


async def plan(s: Story) -> None:
    s.draft = f"about {s.topic}"


async def left(s: Story) -> None:
    s.notes = [*s.notes, f"L:{s.draft}"]


async def right(s: Story) -> None:
    s.notes = [*s.notes, "R"]
    s.facts = {"length": len(s.draft)}


def long_enough(s: Story) -> bool:
    return s.facts["length"] > 3


async def approve(s: Story) -> None:
    s.verdict = f"ok ({len(s.notes)} notes)"


async def reject(s: Story) -> None:
    s.verdict = "no"


async def summarize(s: Story) -> None:
    s.summary = f"{s.draft}: {s.verdict}"


def tidy(s: Story) -> None:  # sync: a .sync group runs it in a thread
    s.summary = s.summary.upper()


async def shout(s: Story) -> None:
    s.summary = s.summary + "!"


def as_title(parent: Story, child: Story) -> None:
    parent.title = child.summary  # a merge that renames: the child's summary is the title


async def publish(s: Story) -> None:
    s.published = f"{s.title} / {s.notes[0]}"


def flow() -> Cadence:
    wrap = Cadence("wrap").then("summarize", summarize).sync("polish", [tidy])
    final = Cadence("final").then("shout", shout)
    return (
        Cadence("story", Story())
        .then("plan", plan)
        .sync("gather", [left, right], merge_strategy="smart_merge")
        .split("check", long_enough, [approve], [reject])
        .child("wrap", wrap)
        .child("final", final, merge=as_title)
        .then("publish", publish)
    )


def record(cadence: Cadence, score: Any) -> tuple[list[dict[str, Any]], Any]:
    """Step records as the run recorder keeps them: a seq per start, parents by step id."""
    steps: list[dict[str, Any]] = []
    seqs: dict[str, int] = {}

    def started(start) -> None:
        seqs[start.step_id] = len(steps) + 1
        steps.append(
            {
                "seq": len(steps) + 1,
                "parent": seqs.get(start.parent_id),
                "name": start.name,
                "kind": start.kind,
            }
        )

    def ended(end) -> None:
        step = steps[seqs[end.step_id] - 1]
        step.update(
            status=end.outcome,
            inputs=end.inputs,
            outputs=end.changes,
            reads=end.reads,
            forked=bool(end.forked),
        )

    traced = TracingHooks(started, ended).instrument(cadence)
    result = asyncio.run(traced.run(score))
    return steps, result


def test_steps_record_what_they_read_and_wrote_inside_sync_split_and_child():
    steps, result = record(flow(), Story(topic="cadence"))

    shape = [(s["seq"], s["parent"], s["kind"], s["name"], s["reads"]) for s in steps]
    assert shape == [
        (1, None, "note", "plan", ["topic"]),
        (2, None, "sync", "gather", []),
        (3, 2, "note", "left", ["draft", "notes"]),
        (4, 2, "note", "right", ["draft", "notes"]),
        (5, None, "split", "check", ["facts"]),
        (6, 5, "note", "approve", ["notes"]),
        (7, None, "child", "wrap", []),
        (8, 7, "note", "summarize", ["draft", "verdict"]),
        (9, 7, "sync", "polish", []),
        (10, 9, "note", "tidy", ["summary"]),
        (11, None, "child", "final", []),
        (12, 11, "note", "shout", ["summary"]),
        (13, None, "note", "publish", ["notes", "title"]),
    ]
    assert [s["forked"] for s in steps] == [s["seq"] in (3, 4, 10) for s in steps]
    assert steps[1]["outputs"] == {
        "notes": ["L:about cadence", "R"],
        "facts": {"length": 13},
    }
    assert steps[2]["outputs"] == {"notes": ["L:about cadence"]}  # its own fork's change
    assert result.published == "ABOUT CADENCE: OK (2 NOTES)! / L:about cadence"
    assert type(result) is Story  # tracking changes nothing about the score


def test_lineage_graph_is_exact_across_merges_and_children():
    steps, _ = record(flow(), Story(topic="cadence"))

    edges = {(e["from"], e["to"], e["field"]) for e in Lineage(steps).graph()["edges"]}

    assert edges == {
        (None, 1, "topic"),
        (1, 3, "draft"),
        (None, 3, "notes"),  # a branch sees the fork, never its sibling's writes
        (1, 4, "draft"),
        (None, 4, "notes"),
        (3, 2, "notes"),  # smart_merge united both branches' lists: the merge wrote notes
        (4, 2, "notes"),
        (4, 5, "facts"),  # only `right` wrote facts: the merge kept its value
        (2, 6, "notes"),
        (1, 8, "draft"),
        (6, 8, "verdict"),  # approve's write, through the split
        (8, 10, "summary"),
        (10, 12, "summary"),  # tidy's value, copied back by .sync and by the child
        (12, 11, "summary"),  # the renaming merge: the title is shout's summary
        (11, 13, "title"),
        (2, 13, "notes"),
    }


def test_the_chain_of_a_value_goes_back_to_the_run_input():
    steps, _ = record(flow(), Story(topic="cadence"))
    lineage = Lineage(steps, run_input={"topic": "cadence"})

    chain = [
        (c["seq"], c["kind"], c["field"], c["value_preview"]) for c in lineage.chain(13, "title")
    ]

    assert chain == [
        (13, "note", "title", '"ABOUT CADENCE: OK (2 NOTES)!"'),
        (11, "child", "title", '"ABOUT CADENCE: OK (2 NOTES)!"'),
        (12, "note", "summary", '"ABOUT CADENCE: OK (2 NOTES)!"'),
        (10, "note", "summary", '"ABOUT CADENCE: OK (2 NOTES)"'),
        (8, "note", "summary", '"about cadence: ok (2 notes)"'),
        (6, "note", "verdict", '"ok (2 notes)"'),
        (2, "sync", "notes", '["L:about cadence", "R"]'),
        (4, "note", "notes", '["R"]'),
        (None, "input", "notes", "[]"),
    ]
    facts = [(c["seq"], c["field"]) for c in lineage.chain(5, "facts")]
    assert facts == [(5, "facts"), (4, "facts"), (1, "draft"), (None, "topic")]
    # A field a step wrote from nothing it read came from the run's input as a whole.
    steps[0]["reads"] = []
    assert Lineage(steps, run_input={"topic": "x"}).chain(1, "draft")[-1] == {
        "seq": None,
        "name": "input",
        "kind": "input",
        "field": None,
        "value_preview": '{"topic": "x"}',
    }


def test_unknown_steps_and_fields_are_named():
    steps, _ = record(flow(), Story(topic="cadence"))
    lineage = Lineage(steps)

    with pytest.raises(LineageError) as no_step:
        lineage.chain(99, "title")
    with pytest.raises(LineageError) as no_field:
        lineage.chain(13, "colour")

    assert (no_step.value.field, str(no_step.value)) == ("step", "The run has no step 99.")
    assert no_field.value.field == "field"
    assert str(no_field.value) == (
        "Step 13 neither read nor wrote a field 'colour'; it read notes, title and wrote published."
    )


def test_a_score_without_read_tracking_records_no_reads():
    @dataclass
    class Plain(Score):
        n: int = 0

    async def bump(s: Plain) -> None:
        s.n += 1

    steps, result = record(Cadence("plain", Plain()).then("bump", bump), Plain())

    assert (steps[0]["reads"], steps[0]["outputs"], result.n) == (None, {"n": 1}, 1)


@dataclass
class Pair(ReadTracked, Score):
    seed: int = 0
    x: int = 0
    y: int = 0
    z: int = 0


async def first(s: Pair) -> None:
    s.x = s.seed + 1
    s.y = 7


async def second(s: Pair) -> None:
    await asyncio.sleep(0.01)  # finishes last: last_write_wins keeps its x
    s.x = s.seed + 2
    s.y = 7


async def use(s: Pair) -> None:
    s.z = s.x + s.y


def test_last_write_wins_and_agreeing_branches_parallel_splits_and_sequences():
    cadence = (
        Cadence("pair", Pair())
        .sync("both", [first, second], merge_strategy="last_write_wins")
        .split(
            "fork", lambda s: s.x > 0, [first, second], parallel=True, merge_strategy="smart_merge"
        )
        .sequence("then", [use])
    )

    steps, result = record(cadence, Pair(seed=1))

    assert [(s["seq"], s["parent"], s["kind"], s["name"], s["forked"]) for s in steps] == [
        (1, None, "sync", "both", False),
        (2, 1, "note", "first", True),
        (3, 1, "note", "second", True),
        (4, None, "split", "fork", False),
        (5, 4, "note", "first", True),
        (6, 4, "note", "second", True),
        (7, None, "sequence", "then", False),
        (8, 7, "note", "use", False),
    ]
    assert (result.x, result.y, result.z) == (2, 7, 9)
    edges = {(e["from"], e["to"], e["field"]) for e in Lineage(steps).graph()["edges"]}
    assert edges == {
        (None, 2, "seed"),
        (None, 3, "seed"),
        # last_write_wins kept second's x; both wrote y = 7, so the merge made y from both
        (2, 1, "y"),
        (3, 1, "y"),
        (3, 4, "x"),  # the split's condition read the merged x
        (None, 5, "seed"),
        (None, 6, "seed"),
        # from x = 3, only `first` changed x (to 2); `second` wrote the value x already had
        (5, 8, "x"),
        (1, 8, "y"),
    }
