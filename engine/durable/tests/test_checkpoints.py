"""The database checkpoint store under the engine: a failed run resumes after its last measure."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from django_tenants.utils import schema_context

from engine import Cadence, Score
from engine.checkpoint import Checkpoint
from engine.durable.checkpoints import DatabaseCheckpointStore
from engine.errors import CadenceError


@dataclass
class Tally(Score):
    seen: list = field(default_factory=list)
    total: int = 0


@pytest.fixture
def store(world, committed_db):
    from engine.durable.models import RunCheckpoint

    yield DatabaseCheckpointStore("org_alpha")
    with schema_context("org_alpha"):
        RunCheckpoint.objects.filter(run_id__startswith="test-").delete()


async def test_a_crashed_run_resumes_after_its_last_measure_and_never_repeats_one(store):
    calls = {"a": 0, "b": 0, "c": 0}
    crash = {"b": True}

    async def a(score):
        calls["a"] += 1
        score.seen.append("a")

    async def b(score):
        calls["b"] += 1
        if crash["b"]:
            raise RuntimeError("worker died")
        score.seen.append("b")

    async def c(score):
        calls["c"] += 1
        score.total = len(score.seen)

    def cadence():
        return (
            Cadence("tally", Tally())
            .then("a", a)
            .then("b", b)
            .then("c", c)
            .with_checkpoint(store, "test-resume")
        )

    with pytest.raises(Exception, match="worker died"):
        await cadence().run()
    saved = await store.load("test-resume")
    assert (saved.measure_index, saved.measure_name, saved.score_state) == (
        0,
        "a",
        {"seen": ["a"], "total": 0},
    )
    crash["b"] = False
    score = await cadence().run()
    assert (score.seen, score.total) == (["a", "b"], 2)
    assert calls == {"a": 1, "b": 2, "c": 1}
    # completed: running it again runs nothing and returns the stored score
    again = await cadence().run()
    assert (again.seen, again.total, calls) == (["a", "b"], 2, {"a": 1, "b": 2, "c": 1})
    assert (await store.load("test-resume")).completed is True


async def test_checkpoints_are_per_organization(store):
    await store.save("test-org", Checkpoint("test-org", "x", 0, "a", {"v": 1}))
    assert (await DatabaseCheckpointStore("org_bravo").load("test-org")) is None
    assert (await store.load("test-org")).score_state == {"v": 1}
    await store.delete("test-org")
    assert await store.load("test-org") is None


@pytest.mark.parametrize("value", [(1, 2), {1, 2}, object(), float("nan"), [1, (2, 3)]])
async def test_a_state_that_would_not_come_back_the_same_is_refused(store, value):
    with pytest.raises(CadenceError, match="cannot be checkpointed as JSON") as caught:
        await store.save("test-json", Checkpoint("test-json", "x", 0, "a", {"field": value}))
    assert caught.value.code == "checkpoint_not_json"
    assert await store.load("test-json") is None
