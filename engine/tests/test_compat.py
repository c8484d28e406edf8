"""The compatibility table of engine/README.md, name by name: code written for the published
library (``cadence-orchestration`` 0.7.2, package ``cadence``) with ``cadence`` replaced by
``engine``. Expected values are the library's documented behaviour (its docstrings and
README), checked against the library itself when this module was written."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import io
import json
import logging
from contextlib import redirect_stdout
from dataclasses import dataclass, field

import pytest

import engine as cadence  # the one-line change a library user makes
from engine.resilience import ManualClock

LIBRARY_EXPORTS = """Cadence Score ImmutableScore note Note Atomic AtomicList AtomicDict MergeConflict
MergeStrategy merge_snapshots Result Ok Err ok err CadenceError NoteError ParallelNoteError Skip
TimeoutError RetryExhaustedError CircuitOpenError retry timeout fallback circuit_breaker
CircuitBreaker CircuitState console_reporter json_reporter CadenceHooks HooksManager LoggingHooks
TimingHooks MetricsHooks TracingHooks DebugHooks CadenceEvent EventEmitter NOTE_STARTED
NOTE_COMPLETED NOTE_FAILED CADENCE_STARTED CADENCE_COMPLETED CADENCE_FAILED CheckpointStore
InMemoryCheckpointStore CheckpointHooks serialize_score restore_score to_mermaid to_dot render_svg
save_diagram print_cadence""".split()

SUBMODULES = {
    "exceptions": "CadenceError NoteError ParallelNoteError Skip TimeoutError RetryExhaustedError",
    "score": "Score ImmutableScore Atomic AtomicList AtomicDict MergeConflict MergeConflictError "
    "MergeStrategy merge_snapshots",
    "hooks": "CadenceHooks HooksManager LoggingHooks TimingHooks MetricsHooks TracingHooks "
    "DebugHooks before_note after_note on_error",
    "diagram": "to_mermaid to_dot render_svg save_diagram print_cadence",
    "result": "Ok Err Result ok err",
    "resilience": "retry timeout fallback circuit_breaker CircuitBreaker CircuitState "
    "CircuitOpenError get_circuit",
    "types": "ScoreT ChildScoreT SyncTask AsyncTask Task SyncCondition AsyncCondition Condition "
    "SyncInterruptible AsyncInterruptible Interruptible SyncMerge AsyncMerge Merge TimeReporter "
    "ErrorHandler",
    "nodes": "Measure SingleMeasure SequenceMeasure ParallelMeasure BranchMeasure "
    "ChildCadenceMeasure",
    "events": "CadenceEvent EventEmitter NOTE_STARTED NOTE_COMPLETED NOTE_FAILED CADENCE_STARTED "
    "CADENCE_COMPLETED CADENCE_FAILED",
    "checkpoint": "CheckpointStore InMemoryCheckpointStore CheckpointHooks serialize_score "
    "restore_score",
    "note": "Note note",
    "reporters": "console_reporter json_reporter PrometheusReporter OpenTelemetryReporter",
    "integrations.fastapi": "CadenceRoute cadence_endpoint with_cadence CadenceDependency "
    "CadenceMiddleware",
    "integrations.flask": "cadence_route with_cadence CadenceBlueprint CadenceExtension",
}


@pytest.mark.parametrize("name", LIBRARY_EXPORTS)
def test_every_library_export_is_importable_from_engine(name):
    assert hasattr(cadence, name), name


@pytest.mark.parametrize("module", sorted(SUBMODULES))
def test_documented_submodules_hold_their_names(module):
    mod = importlib.import_module(f"engine.{module}")
    assert [n for n in SUBMODULES[module].split() if not hasattr(mod, n)] == []


def test_version_and_event_type_strings():
    assert cadence.__version__ == "0.7.2"
    assert (cadence.NOTE_STARTED, cadence.NOTE_COMPLETED, cadence.NOTE_FAILED) == (
        "note.started",
        "note.completed",
        "note.failed",
    )
    assert cadence.CADENCE_FAILED == "cadence.failed"


@dataclass
class S(cadence.Score):
    value: int = 0
    items: list = field(default_factory=list)
    status: str = "new"


async def inc(score: S) -> None:
    score.value += 1


def inc_sync(score: S) -> None:
    score.value += 1


async def add_a(score: S) -> None:
    score.items = [*score.items, "a"]


async def add_b(score: S) -> None:
    score.items = [*score.items, "b"]


async def boom(score: S) -> None:
    raise ValueError("boom")


def is_big(score: S) -> bool:
    return score.value > 1


def run(c: cadence.Cadence) -> S:
    return asyncio.run(c.run())


# -- Cadence ------------------------------------------------------------------------------


def test_cadence_builder_run_get_score_and_repr():
    c = cadence.Cadence("c", S()).then("a", inc).then("b", inc_sync).sequence("q", [inc, inc_sync])
    assert run(c) is c.get_score()
    assert c.get_score().value == 4
    assert (c.name, repr(c)) == ("c", "<Cadence: c (3 measures)>")
    assert cadence.Cadence("c", S(value=2)).split("r", is_big, inc, add_a).run_sync().value == 3


def test_skip_stops_the_remaining_measures_cleanly():
    async def skipper(score: S) -> None:
        score.value = 7
        raise cadence.Skip("enough")

    assert (
        run(cadence.Cadence("c", S()).then("a", inc).then("s", skipper).then("b", inc)).value == 7
    )
    assert (cadence.Skip().reason, str(cadence.Skip())) == ("skipped", "[SKIP] skipped")


def test_an_interruptible_note_returning_true_stops_the_run():
    async def stop(score: S) -> bool:
        score.value = 5
        return True

    c = cadence.Cadence("c", S()).then("s", stop, can_interrupt=True).then("b", inc)
    assert run(c).value == 5


def test_on_error_stop_ends_the_run_and_continue_goes_on():
    seen: list[str] = []
    stopped = cadence.Cadence("c", S()).then("x", boom).on_error(lambda s, e: seen.append(str(e)))
    assert run(stopped.then("b", inc)).value == 0
    assert seen == ["[NOTE_ERROR] boom"]
    go_on = cadence.Cadence("c", S()).then("x", boom).on_error(lambda s, e: None, stop=False)
    assert run(go_on.then("b", inc)).value == 1


def test_child_cadences_merge_into_the_parent():
    kid = cadence.Cadence("kid", S(value=10)).then("k", inc)

    def merge(parent: S, child: S) -> None:
        parent.value = child.value

    assert run(cadence.Cadence("p", S()).child("c", kid, merge)).value == 11


# -- errors -----------------------------------------------------------------------------


def test_a_failing_note_is_a_note_error_named_after_the_measure():
    with pytest.raises(cadence.NoteError) as info:
        run(cadence.Cadence("c", S()).sequence("x", [inc, boom]))
    e = info.value
    assert (e.code, e.note_name, str(e), type(e.original_error)) == (
        "NOTE_ERROR",
        "x",
        "[NOTE_ERROR] boom",
        ValueError,
    )
    assert e.details["note_name"] == "x"


def test_parallel_note_error_names_group_index_and_task():
    with pytest.raises(cadence.ParallelNoteError) as info:
        run(cadence.Cadence("c", S()).sync("grp", [inc, boom]))
    e = info.value
    assert (e.group_name, e.task_index, e.note_name) == ("grp", 1, "boom")
    assert str(e) == "[PARALLEL_NOTE_ERROR] Task 'boom' in group 'grp' failed: boom"
    assert isinstance(e, cadence.NoteError) and isinstance(e.original_error, ValueError)


def test_error_constructors_take_the_library_signatures():
    assert str(cadence.NoteError("m", note_name="n")) == "[NOTE_ERROR] m"
    assert str(cadence.TimeoutError("n", 2.0)) == "[TIMEOUT] Note 'n' timed out after 2.0s"
    retried = cadence.RetryExhaustedError("n", 3, ValueError("v"))
    assert (str(retried), retried.last_error.args) == (
        "[RETRY_EXHAUSTED] Note 'n' failed after 3 attempts: v",
        ("v",),
    )
    assert cadence.CadenceError("x").code == "CADENCE_ERROR"
    assert str(cadence.CadenceError("x", code="MINE", details={"a": 1})) == "[MINE] x"
    assert cadence.CircuitOpenError("svc", 2.0).name == "svc"
    conflict = cadence.MergeConflict("f", [1, 2])
    assert (conflict.field, conflict.values) == ("f", [1, 2])
    assert importlib.import_module("engine.score").MergeConflictError is cadence.MergeConflict


def test_engine_errors_raised_by_notes_reach_the_caller_unwrapped():
    clock = ManualClock()

    @cadence.note(timeout={"seconds": 1.0, "clock": clock})
    async def slow(score: S) -> None:
        await clock.sleep(5)

    with pytest.raises(cadence.TimeoutError):
        run(cadence.Cadence("c", S()).then("t", slow))


# -- scores and merging -------------------------------------------------------------------


def test_sync_merge_strategies():
    conflict = cadence.Cadence("c", S()).sync("g", [add_a, add_b])
    with pytest.raises(cadence.NoteError) as info:
        run(conflict)
    assert str(info.value) == (
        "[NOTE_ERROR] Conflict on field 'items': multiple tasks wrote different values: "
        "[['a'], ['b']]"
    )
    lww = cadence.Cadence("c", S()).sync(
        "g", [add_a], merge_strategy=cadence.MergeStrategy.last_write_wins
    )
    assert run(lww).items == ["a"]
    smart = cadence.Cadence("c", S(items=["x"])).sync(
        "g", [add_a, add_b], merge_strategy=cadence.MergeStrategy.smart_merge
    )
    assert run(smart).items == ["x", "a", "b"]  # the library repeats "x": see the README


def test_tasks_writing_the_same_value_do_not_conflict():
    async def same(score: S) -> None:
        score.status = "same"

    assert run(cadence.Cadence("c", S()).sync("g", [same, same])).status == "same"


def test_a_three_argument_merge_strategy_gets_snapshots_and_changes():
    def custom(original: S, snapshots: list, changes: list[dict]) -> None:
        original.status = f"{len(snapshots)}:{sorted(k for c in changes for k in c)}"

    c = cadence.Cadence("c", S()).sync("g", [inc, add_a], merge_strategy=custom)
    assert run(c).status == "2:['items', 'value']"


def test_merge_snapshots_and_score_snapshots():
    score = S()
    first, second = score._snapshot(), score._snapshot()
    first.value, second.items = 4, ["q"]
    assert first._get_changes() == {"value": 4}
    cadence.merge_snapshots(score, [first, second])
    assert (score.value, score.items) == (4, ["q"])


def test_atomic_wrappers_and_immutable_scores():
    a = cadence.Atomic(1)
    a.update(lambda v: v + 1)
    assert (a.get(), a.compare_and_swap(2, 9), a.get()) == (2, True, 9)
    items = cadence.AtomicList([1])
    items.append(2)
    assert (items.get_all(), items.clear(), len(items)) == ([1, 2], [1, 2], 0)
    d = cadence.AtomicDict({"a": 1})
    d.set("b", 2)
    assert (d.get_all(), d.pop("missing"), "a" in d) == ({"a": 1, "b": 2}, None, True)

    @dataclass(frozen=True)
    class Config(cadence.ImmutableScore):
        timeout: int = 30

    assert (Config().with_field("timeout", 60).timeout, Config().replace(timeout=5).timeout) == (
        60,
        5,
    )


def test_result_types():
    assert (cadence.ok(1).unwrap(), cadence.Ok(2).map(lambda x: x * 3).value) == (1, 6)
    failed = cadence.err(ValueError("e"))
    assert (failed.is_err(), failed.unwrap_or(5), failed.map(str) is failed) == (True, 5, True)
    with pytest.raises(ValueError):
        failed.unwrap()


# -- notes and resilience -----------------------------------------------------------------


def test_note_objects_describe_themselves():
    @cadence.note(name="custom", description="d", retry=3, timeout=5)
    async def f(score: S) -> None:
        pass

    assert (f.name, f.description, f.is_async) == ("custom", "d", True)
    assert f.resilience == {"retry": {"max_attempts": 3}, "timeout": {"seconds": 5.0}}
    assert repr(f) == "<Note: custom [retry, timeout]>"
    assert isinstance(f, cadence.Note)


def test_fallback_field_default_and_error_handler():
    @cadence.note(fallback={"default": "unknown", "field": "status"})
    async def get(score: S) -> None:
        raise ValueError("x")

    @cadence.fallback(handler=lambda e: f"handled {e}", field="status")
    async def get2(score: S) -> None:
        raise ValueError("y")

    assert run(cadence.Cadence("c", S()).then("g", get)).status == "unknown"
    assert run(cadence.Cadence("c", S()).then("g", get2)).status == "handled y"


def test_retry_exhausted_reaches_the_caller():
    @cadence.note(retry={"max_attempts": 2, "delay": 0.0})
    async def always(score: S) -> None:
        raise ConnectionError("down")

    with pytest.raises(cadence.RetryExhaustedError) as info:
        run(cadence.Cadence("c", S()).then("r", always))
    assert isinstance(info.value.last_error, ConnectionError)


def test_circuit_breaker_state_machine_and_registry():
    clock = ManualClock()

    @cadence.circuit_breaker(
        failure_threshold=2, recovery_timeout=30.0, name="compat-svc", clock=clock
    )
    async def flaky(score: S) -> None:
        raise ConnectionError("down")

    outcomes = []
    for _ in range(3):
        try:
            asyncio.run(flaky(S()))
        except Exception as e:  # noqa: BLE001 - the outcome is what is compared
            outcomes.append(type(e).__name__)
    breaker = cadence.resilience.get_circuit("compat-svc")
    assert outcomes == ["ConnectionError", "ConnectionError", "CircuitOpenError"]
    assert breaker.state is cadence.CircuitState.OPEN and breaker.state.value == "open"
    clock.advance(30)
    assert breaker.state == cadence.CircuitState.HALF_OPEN
    breaker.reset()
    assert breaker.state == "closed"


def test_circuit_breaker_stacked_over_note_counts_the_notes_failures():
    # The library's breaker, seeing a Note (a sync callable), would count every call a success.
    @cadence.circuit_breaker(failure_threshold=1, name="compat-stacked")
    @cadence.note
    async def down(score: S) -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        asyncio.run(down(S()))
    with pytest.raises(cadence.CircuitOpenError):
        asyncio.run(down(S()))


# -- hooks, events, reporters --------------------------------------------------------------


def test_reporters_get_notes_group_members_and_the_total():
    names: list[str] = []
    c = (
        cadence.Cadence("c", S())
        .with_reporter(lambda n, t, s: names.append(n))
        .then("a", inc)
        .sequence("q", [inc, inc])
        .sync("g", [inc, add_a])
        .split("r", is_big, [inc], [inc])
    )
    run(c)
    assert names == ["a", "q[0]", "q[1]", "g[0]", "g[1]", "r_if[0]", "c:TOTAL"]


def test_console_and_json_reporters_print_the_library_lines():
    out = io.StringIO()
    with redirect_stdout(out):
        run(cadence.Cadence("c", S()).with_reporter(cadence.console_reporter).then("a", inc))
        run(cadence.Cadence("c", S()).with_reporter(cadence.json_reporter).then("a", inc))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("  a: ") and lines[1].startswith("[c] TOTAL: ")
    assert [json.loads(x)["type"] for x in lines[2:]] == ["beat", "cadence_total"]


def test_timing_metrics_debug_and_logging_hooks():
    timing, metrics = cadence.TimingHooks(), cadence.MetricsHooks()
    c = (
        cadence.Cadence("c", S())
        .with_hooks([timing, metrics])
        .then("a", inc)
        .then("x", boom)
        .on_error(lambda s, e: None, stop=False)
    )
    run(c)
    assert sorted(timing.note_times) == ["a", "x"]
    assert timing.get_report().splitlines()[0] == "=== Timing Report: c ==="
    got = metrics.get_metrics()
    assert {k: v for k, v in got["cadences"]["c"].items() if k != "avg_duration"} == {
        "success": 0,
        "failure": 1,
        "total": 1,
        "success_rate": 0.0,
    }
    assert got["notes"]["a"]["success"] == 1 and got["retries"] == {}
    metrics.reset()
    assert metrics.get_metrics()["notes"] == {}

    out = io.StringIO()
    with redirect_stdout(out):
        hooks = cadence.DebugHooks(show_score=False, show_timing=False)
        run(cadence.Cadence("c", S()).with_hooks(hooks).then("a", inc))
    assert out.getvalue() == (
        f"\n{'=' * 60}\nCADENCE: c\n{'=' * 60}\n\n→ a\n  ✓\n\nCADENCE COMPLETED\n{'=' * 60}\n\n"
    )


def test_logging_hooks_take_logger_name_and_levels(caplog):
    with caplog.at_level(logging.DEBUG, logger="myapp"):
        hooks = cadence.LoggingHooks("myapp", level=logging.DEBUG, error_level=logging.WARNING)
        c = cadence.Cadence("c", S()).with_hooks(hooks).then("x", boom)
        c.on_error(lambda s, e: None)
        run(c)
    records = [(r.levelno, r.getMessage().split(" after")[0]) for r in caplog.records]
    assert records[:3] == [
        (logging.DEBUG, "[c] Starting cadence"),
        (logging.DEBUG, "  → x"),
        (logging.WARNING, "  ✗ x failed"),
    ]


def test_hooks_manager_and_functional_hooks():
    seen: list[str] = []
    manager = cadence.HooksManager()
    hook = cadence.hooks.before_note(lambda name, score: seen.append(name))
    assert manager.add(hook) is manager
    manager.remove(hook)
    assert manager.hooks == []
    run(cadence.Cadence("c", S()).with_hooks(hook).then("a", inc))
    assert seen == ["a"]


def test_custom_hooks_with_the_library_signatures_including_on_retry():
    calls: list[tuple] = []

    class Mine(cadence.CadenceHooks):
        async def on_retry(self, note_name, score, attempt, max_attempts, error):
            calls.append((note_name, attempt, max_attempts, type(error).__name__))

    attempts = {"n": 0}

    @cadence.note(retry={"max_attempts": 2, "delay": 0.0})
    async def flaky(score: S) -> None:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise ConnectionError("once")

    run(cadence.Cadence("c", S()).with_hooks(Mine()).then("f", flaky))
    assert calls == [("f", 1, 2, "ConnectionError")]


def test_event_emitter_events_and_cadence_event_fields():
    seen = []
    emitter = cadence.EventEmitter()
    assert emitter.on("*", seen.append) is emitter
    c = (
        cadence.Cadence("c", S())
        .with_hooks(emitter)
        .then("a", inc)
        .then("x", boom)
        .on_error(lambda s, e: None, stop=False)
    )
    run(c)
    assert [(e.event_type, e.note_name, e.error is not None) for e in seen] == [
        ("cadence.started", None, False),
        ("note.started", "a", False),
        ("note.completed", "a", False),
        ("note.started", "x", False),
        ("note.failed", "x", True),
        ("cadence.failed", None, True),
    ]
    assert all(isinstance(e, cadence.CadenceEvent) and e.cadence_name == "c" for e in seen)
    assert isinstance(seen[2].duration, float) and seen[2].timestamp > 0
    assert dataclasses.asdict(seen[2])["note_name"] == "a"
    made = cadence.CadenceEvent(event_type="t", cadence_name="c")
    assert (made.metadata, made.note_name, made.duration) == ({}, None, None)


def test_lazily_built_note_events_read_like_cadence_events():
    heard = []
    emitter = cadence.EventEmitter().on(cadence.NOTE_COMPLETED, heard.append)
    run(cadence.Cadence("lazy", S()).with_hooks(emitter).then("a", inc))
    (event,) = heard
    assert (event.event_type, event.cadence_name, event.note_name, event.error) == (
        "note.completed",
        "lazy",
        "a",
        None,
    )
    assert event.duration >= 0 and abs(event.timestamp - __import__("time").time()) < 60
    event.metadata["k"] = 1
    assert event.metadata == {"k": 1}


# -- checkpoints ---------------------------------------------------------------------------


class LibraryStyleStore:
    """A store written for the library's CheckpointStore protocol."""

    def __init__(self) -> None:
        self.data: dict = {}

    async def save_checkpoint(self, cadence_name, run_id, measure_name, measure_index, score_state):
        entry = self.data.setdefault((cadence_name, run_id), {"done": set()})
        entry["done"].add(measure_name)
        entry["state"] = score_state

    async def get_completed_measures(self, cadence_name, run_id):
        return set(self.data.get((cadence_name, run_id), {}).get("done", set()))

    async def get_last_score_state(self, cadence_name, run_id):
        return self.data.get((cadence_name, run_id), {}).get("state")

    async def clear_checkpoints(self, cadence_name, run_id):
        self.data.pop((cadence_name, run_id), None)


@pytest.mark.parametrize("store_class", [LibraryStyleStore, cadence.InMemoryCheckpointStore])
def test_checkpoint_resume_skips_completed_measures_and_clears_on_success(store_class):
    store, calls = store_class(), []
    assert isinstance(store, cadence.CheckpointStore)

    async def charge(score: S) -> None:
        calls.append("charge")
        if len(calls) == 1:
            raise RuntimeError("crash")
        score.status = "charged"

    c = (
        cadence.Cadence("pay", S())
        .with_checkpoint(store, run_id="r1")
        .then("v", inc)
        .then("charge", charge)
    )
    with pytest.raises(cadence.NoteError):
        run(c)
    assert asyncio.run(store.get_completed_measures("pay", "r1")) == {"v"}
    assert (
        json.loads(json.dumps(asyncio.run(store.get_last_score_state("pay", "r1"))))["value"] == 1
    )
    result = run(c)
    assert (result.value, result.status, calls) == (1, "charged", ["charge", "charge"])
    assert asyncio.run(store.get_completed_measures("pay", "r1")) == set()
    with pytest.raises(cadence.CadenceError) as info:
        c.with_checkpoint(store, run_id="again")
    assert info.value.code == "CHECKPOINT_ALREADY_SET"


def test_serialize_restore_and_checkpoint_hooks():
    assert cadence.serialize_score(S(value=3)) == {"value": 3, "items": [], "status": "new"}
    score = S()
    cadence.restore_score(score, {"value": 9, "_private": 1})
    assert score.value == 9 and not hasattr(score, "_private")
    store = cadence.InMemoryCheckpointStore()
    hooks = cadence.CheckpointHooks(store, "run-1")
    run(cadence.Cadence("h", S()).with_hooks(hooks).then("a", inc))
    assert (hooks.run_id, asyncio.run(store.get_completed_measures("h", "run-1"))) == (
        "run-1",
        set(),
    )


# -- diagrams ----------------------------------------------------------------------------


def flow() -> cadence.Cadence:
    child = cadence.Cadence("k", S()).then("x", inc)
    return (
        cadence.Cadence("flow", S())
        .then("a", inc)
        .sync("g", [inc, add_a])
        .split("route", is_big, [inc], [])
        .child("sub", child, lambda p, c: None)
    )


def test_mermaid_in_the_library_layout_with_options():
    assert cadence.to_mermaid(flow(), direction="LR", theme="dark").splitlines() == [
        "%%{init: {'theme': 'dark'}}%%",
        "flowchart LR",
        "    START([flow])",
        "    measure_0[a]",
        "    START --> measure_0",
        "    measure_1_fork{{parallel: g}}",
        "    measure_0 --> measure_1_fork",
        "    measure_1_task_0[inc]",
        "    measure_1_fork --> measure_1_task_0",
        "    measure_1_task_0 --> measure_1_join",
        "    measure_1_task_1[add_a]",
        "    measure_1_fork --> measure_1_task_1",
        "    measure_1_task_1 --> measure_1_join",
        "    measure_1_join((join))",
        "    measure_2{route\\n(is_big)}",
        "    measure_1_join --> measure_2",
        "    measure_2_true_0[inc]",
        "    measure_2 -->|Yes| measure_2_true_0",
        "    measure_2_true_0 --> measure_2_merge",
        "    measure_2 -->|No| measure_2_merge",
        "    measure_2_merge((merge))",
        "    measure_3[[sub\\n[k]]]",
        "    measure_2_merge --> measure_3",
        "    END([End])",
        "    measure_3 --> END",
    ]


def test_dot_in_the_library_layout_with_colours():
    lines = cadence.to_dot(flow(), rankdir="LR", node_color="#fff", edge_color="#000").splitlines()
    assert lines[:6] == [
        "digraph cadence {",
        "    rankdir=LR;",
        '    node [shape=box, style=filled, fontname="Arial"];',
        '    edge [color="#000"];',
        "",
        '    START [label="flow", shape=oval, fillcolor="#90EE90"];',
    ]
    assert '    measure_0 [label="a", fillcolor="#fff"];' in lines
    assert '    measure_3 [label="sub\\l[k]", shape=box3d, fillcolor="#DDA0DD"];' in lines
    assert lines[-2:] == ["    measure_3 -> END;", "}"]


def test_print_cadence_and_save_diagram(tmp_path):
    out = io.StringIO()
    with redirect_stdout(out):
        cadence.print_cadence(flow())
    assert out.getvalue().splitlines()[1:4] == ["=== Cadence: flow ===", "", "├── [a]"]
    cadence.save_diagram(flow(), tmp_path / "flow.mmd")
    assert (tmp_path / "flow.mmd").read_text() == cadence.to_mermaid(flow())
    with pytest.raises(ValueError):
        cadence.save_diagram(flow(), tmp_path / "flow.txt")


def test_render_svg_names_the_missing_tool(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match="Graphviz"):
        cadence.render_svg(flow())


def test_reporter_factories_tracing_context_and_metrics_middleware():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry

    from engine.reporters import (
        MetricsMiddleware,
        TracingContext,
        opentelemetry_reporter,
        prometheus_reporter,
    )

    registry = CollectorRegistry()
    reporter = prometheus_reporter("compat", registry=registry)
    run(cadence.Cadence("c", S()).with_reporter(reporter).then("a", inc))
    assert registry.get_sample_value("compat_note_total", {"note": "a"}) == 1.0

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = opentelemetry_reporter("svc", include_state=True, tracer_provider=provider)
    run(cadence.Cadence("c", S()).with_reporter(spans).then("a", inc))
    note_span = exporter.get_finished_spans()[0]
    assert (note_span.name, note_span.attributes["score.value"]) == ("a", 1)
    with pytest.raises(RuntimeError), TracingContext("op", {"k": 1}) as ctx:
        ctx.set_attribute("x", 2)
        raise RuntimeError("inside")

    sent: list[dict] = []

    async def app(scope, receive, send):
        await send({"type": "passed", "path": scope["path"]})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    middleware = MetricsMiddleware(app, registry=registry)
    asyncio.run(middleware({"type": "http", "path": "/other", "headers": []}, receive, send))
    asyncio.run(
        middleware(
            {
                "type": "http",
                "path": "/metrics",
                "method": "GET",
                "headers": [],
                "query_string": b"",
            },
            receive,
            send,
        )
    )
    assert sent[0] == {"type": "passed", "path": "/other"}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert b"compat_note_total" in body
