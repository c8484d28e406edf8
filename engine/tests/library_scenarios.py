"""Library-style code run with ``cadence`` (the published library) or ``engine``.

``python library_scenarios.py cadence|engine`` prints, as JSON, what each scenario produced;
``test_library_parity.py`` runs it under both and compares. Not collected by pytest (no test_
prefix); written compactly on purpose, one scenario a line or two.
"""
# ruff: noqa: E401, E701, E702, E731, B023, BLE001, C408, C416, PIE804, T201, N806, E741

import asyncio
import contextlib
import importlib
import io
import json
import logging
import sys
from dataclasses import dataclass, field

pkg = sys.argv[1]
C = importlib.import_module(pkg)
ev = importlib.import_module(pkg + ".events")
out = {}


def rec(name, fn):
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            value = fn()
        out[name] = {"value": value, "stdout": buf.getvalue()}
    except Exception as e:
        out[name] = {"raised": type(e).__name__, "str": str(e), "stdout": buf.getvalue()}


@dataclass
class S(C.Score):
    value: int = 0
    items: list = field(default_factory=list)
    status: str = "new"
    tags: dict = field(default_factory=dict)


async def inc(s):
    s.value += 1


def inc_sync(s):
    s.value += 1


async def add_a(s):
    s.items = s.items + ["a"]


async def add_b(s):
    s.items = s.items + ["b"]


async def boom(s):
    raise ValueError("boom")


def is_big(s):
    return s.value > 1


async def set_done(s):
    s.status = "done"


def run(c):
    return asyncio.run(c.run())


def state(s):
    return {"value": s.value, "items": s.items, "status": s.status, "tags": s.tags}


rec(
    "chain",
    lambda: state(
        run(C.Cadence("c", S()).then("a", inc).then("b", inc_sync).sequence("seq", [inc, inc_sync]))
    ),
)
rec("sync_conflict", lambda: state(run(C.Cadence("c", S()).sync("g", [add_a, add_b]))))
rec(
    "sync_smart",
    lambda: state(
        run(
            C.Cadence("c", S(items=["x"])).sync(
                "g", [add_a, add_b], merge_strategy=C.MergeStrategy.smart_merge
            )
        )
    ),
)
rec(
    "sync_lww",
    lambda: state(
        run(
            C.Cadence("c", S()).sync(
                "g", [add_a, add_b], merge_strategy=C.MergeStrategy.last_write_wins
            )
        )
    ),
)


async def same1(s):
    s.status = "same"


async def same2(s):
    s.status = "same"


rec("sync_same_value", lambda: state(run(C.Cadence("c", S()).sync("g", [same1, same2]))))


def custom(original, snapshots, changes):
    original.tags = {"n": len(snapshots), "fields": sorted(k for c in changes for k in c)}


rec(
    "sync_custom3",
    lambda: state(run(C.Cadence("c", S()).sync("g", [inc, add_a], merge_strategy=custom))),
)
rec("split", lambda: state(run(C.Cadence("c", S(value=2)).split("r", is_big, [set_done], [inc]))))
rec("split_false", lambda: state(run(C.Cadence("c", S()).split("r", is_big, set_done, inc))))


def err_info(e):
    return {
        "type": type(e).__name__,
        "str": str(e),
        "code": e.code,
        "note": getattr(e, "note_name", None),
        "orig": type(getattr(e, "original_error", None)).__name__,
    }


def raises(c):
    try:
        run(c)
        return "no error"
    except Exception as e:
        return err_info(e)


rec("then_fails", lambda: raises(C.Cadence("c", S()).then("x", boom)))
rec("seq_fails", lambda: raises(C.Cadence("c", S()).sequence("x", [inc, boom])))
rec("sync_fails", lambda: raises(C.Cadence("c", S()).sync("x", [inc, boom])) | {})


def pne():
    try:
        run(C.Cadence("c", S()).sync("grp", [inc, boom]))
    except C.ParallelNoteError as e:
        return [e.group_name, e.task_index, e.note_name, str(e), type(e.original_error).__name__]


rec("parallel_note_error", pne)


async def skipper(s):
    s.value = 7
    raise C.Skip("enough")


rec(
    "skip", lambda: state(run(C.Cadence("c", S()).then("a", inc).then("s", skipper).then("b", inc)))
)


async def stopper(s):
    s.value = 5
    return True


rec(
    "interrupt_true",
    lambda: state(run(C.Cadence("c", S()).then("s", stopper, can_interrupt=True).then("b", inc))),
)
handled = []
rec(
    "on_error_stop",
    lambda: (
        state(
            run(
                C.Cadence("c", S())
                .then("x", boom)
                .on_error(lambda s, e: handled.append(str(e)))
                .then("b", inc)
            )
        ),
        list(handled),
    ),
)
rec(
    "on_error_continue",
    lambda: state(
        run(
            C.Cadence("c", S())
            .then("x", boom)
            .on_error(lambda s, e: None, stop=False)
            .then("b", inc)
        )
    ),
)
reports = []
rec(
    "reporter",
    lambda: (
        state(
            run(
                C.Cadence("c", S())
                .with_reporter(lambda n, t, s: reports.append(n))
                .then("a", inc)
                .sequence("q", [inc, inc])
                .sync("g", [inc, add_a])
                .split("r", is_big, [inc], [inc])
            )
        ),
        list(reports),
    ),
)
rec(
    "console_reporter",
    lambda: state(run(C.Cadence("c", S()).with_reporter(C.console_reporter).then("a", inc))),
)


def timing():
    t = C.TimingHooks()
    run(C.Cadence("c", S()).with_hooks(t).then("a", inc).then("b", inc))
    return sorted(t.note_times), t.get_report().splitlines()[0], len(t.get_report().splitlines())


rec("timing_hooks", timing)


def metrics():
    m = C.MetricsHooks()
    run(
        C.Cadence("c", S())
        .with_hooks(m)
        .then("a", inc)
        .then("x", boom)
        .on_error(lambda s, e: None, stop=False)
    )
    got = m.get_metrics()
    for part in ("cadences", "notes"):
        for v in got[part].values():
            v.pop("avg_duration")
    return got


rec("metrics_hooks", metrics)


def debug():
    run(
        C.Cadence("c", S())
        .with_hooks(C.DebugHooks(show_score=False, show_timing=False))
        .then("a", inc)
    )


rec("debug_hooks", debug)


def logging_hooks():
    stream = io.StringIO()
    h = logging.StreamHandler(stream)
    lg = logging.getLogger("cadence")
    lg.addHandler(h)
    lg.setLevel(logging.INFO)
    run(C.Cadence("c", S()).with_hooks(C.LoggingHooks()).then("a", inc))
    lg.removeHandler(h)
    return [l.split("(")[0] for l in stream.getvalue().splitlines()]


rec("logging_hooks", logging_hooks)


def events():
    seen = []
    e = C.EventEmitter()
    e.on(
        "*",
        lambda x: seen.append(
            (
                x.event_type,
                x.cadence_name,
                x.note_name,
                x.error is not None,
                type(x.duration).__name__,
            )
        ),
    )
    run(
        C.Cadence("c", S())
        .with_hooks(e)
        .then("a", inc)
        .then("x", boom)
        .on_error(lambda s, er: None, stop=False)
    )
    return seen


rec("events", events)
rec(
    "event_fields",
    lambda: (
        sorted(
            k
            for k in vars(C.CadenceEvent(event_type="t", cadence_name="c"))
            if not k.startswith("_")
        )
        if hasattr(C.CadenceEvent(event_type="t", cadence_name="c"), "__dict__")
        else "slots"
    ),
)


def checkpoint():
    store = C.InMemoryCheckpointStore()
    calls = []

    async def charge(s):
        calls.append("charge")
        if len(calls) == 1:
            raise RuntimeError("crash")
        s.status = "charged"

    c = (
        C.Cadence("pay", S())
        .with_checkpoint(store, run_id="r1")
        .then("v", inc)
        .then("charge", charge)
        .then("d", set_done)
    )
    try:
        run(c)
    except Exception as e:
        first = type(e).__name__
    mid = asyncio.run(store.get_completed_measures("pay", "r1"))
    res = state(run(c))
    after = asyncio.run(store.get_completed_measures("pay", "r1"))
    return first, sorted(mid), res, sorted(after), calls


rec("checkpoint", checkpoint)


class MyStore:
    def __init__(self):
        self.d = {}

    async def save_checkpoint(self, cadence_name, run_id, measure_name, measure_index, score_state):
        e = self.d.setdefault((cadence_name, run_id), {"done": set()})
        e["done"].add(measure_name)
        e["state"] = score_state
        e["i"] = measure_index

    async def get_completed_measures(self, cadence_name, run_id):
        return set(self.d.get((cadence_name, run_id), {}).get("done", set()))

    async def get_last_score_state(self, cadence_name, run_id):
        return self.d.get((cadence_name, run_id), {}).get("state")

    async def clear_checkpoints(self, cadence_name, run_id):
        self.d.pop((cadence_name, run_id), None)


def custom_store():
    store = MyStore()
    calls = []

    async def flaky(s):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("crash")

    c = (
        C.Cadence("k", S())
        .with_checkpoint(store, run_id="r")
        .then("a", inc)
        .then("f", flaky)
        .then("b", inc)
    )
    try:
        run(c)
    except Exception:
        pass
    saved = json.dumps(store.d[("k", "r")]["state"])
    return state(run(c)), store.d, saved, len(calls)


rec("custom_store", custom_store)
rec("serialize", lambda: C.serialize_score(S(value=3)))


def retry_exhausted():
    @C.note(retry={"max_attempts": 2, "delay": 0.0, "jitter": False})
    async def always(s):
        raise ConnectionError("down")

    return raises(C.Cadence("c", S()).then("r", always))


rec("retry_exhausted", retry_exhausted)


def timeout_err():
    @C.note(timeout=0.01)
    async def slow(s):
        await asyncio.sleep(1)

    return raises(C.Cadence("c", S()).then("t", slow))


rec("timeout", timeout_err)


def fb():
    @C.note(fallback={"default": "unknown", "field": "status"})
    async def get(s):
        raise ValueError("x")

    @C.fallback(handler=lambda e: f"handled {e}", field="status")
    async def get2(s):
        raise ValueError("y")

    return state(run(C.Cadence("c", S()).then("g", get))), state(
        run(C.Cadence("c", S()).then("g", get2))
    )


rec("fallback", fb)


def notes():
    @C.note(name="custom", description="d", retry=3, timeout=5)
    async def f(s):
        pass

    return [f.name, f.description, f.is_async, f.resilience, repr(f)]


rec("note_object", notes)


def circuit():
    @C.circuit_breaker(failure_threshold=2, recovery_timeout=30.0, name="svc-" + pkg)
    async def flaky(s):
        raise ConnectionError("down")

    results = []
    for _ in range(3):
        try:
            asyncio.run(flaky(S()))
        except Exception as e:
            results.append(type(e).__name__)
    cb = C.resilience.get_circuit("svc-" + pkg)
    return results, cb.state.value, C.CircuitState.OPEN.value


rec("circuit", circuit)
rec("circuit_state", lambda: [s.value for s in C.CircuitState])


def result_types():
    return [
        C.ok(1).unwrap(),
        C.err(ValueError("e")).unwrap_or(5),
        C.Ok(2).map(lambda x: x * 3).value,
        C.Err(ValueError()).is_err(),
    ]


rec("result", result_types)


def atomic():
    a = C.Atomic(1)
    a.update(lambda v: v + 1)
    swapped = a.compare_and_swap(2, 9)
    l = C.AtomicList([1])
    l.append(2)
    cleared = l.clear()
    d = C.AtomicDict({"a": 1})
    d.set("b", 2)
    return [a.get(), swapped, cleared, len(l), d.get_all(), d.pop("zz"), "a" in d]


rec("atomic", atomic)


def immutable():
    @dataclass(frozen=True)
    class F(C.ImmutableScore):
        v: int = 0

    f = F().with_field("v", 3)
    return [f.v, f.replace(v=4).v]


rec("immutable", immutable)


def diagrams():
    child = C.Cadence("child", S()).then("x", inc)
    c = (
        C.Cadence("flow", S())
        .then("a", inc)
        .sync("g", [inc, add_a])
        .sequence("q", [inc, inc_sync])
        .split("route", is_big, [set_done], [inc])
        .split("only", is_big, [inc])
        .child("sub", child, lambda p, c: None)
        .then("z", inc)
    )
    return [
        C.to_mermaid(c),
        C.to_mermaid(c, direction="LR", theme="dark"),
        C.to_dot(c),
        C.to_dot(c, rankdir="LR", node_color="#fff", edge_color="#000"),
    ]


rec("diagrams", diagrams)


def printed():
    c = (
        C.Cadence("flow", S())
        .then("a", inc)
        .sync("g", [inc, add_a])
        .sequence("q", [inc])
        .split("route", is_big, [set_done], [inc])
        .child("sub", C.Cadence("k", S()), lambda p, c: None)
    )
    C.print_cadence(c)


rec("print_cadence", printed)


def merges():
    s = S()
    snaps = [s._snapshot(), s._snapshot()]
    snaps[0].value = 4
    snaps[1].items = ["q"]
    C.merge_snapshots(s, snaps)
    return state(s)


rec("merge_snapshots", merges)


def child():
    kid = C.Cadence("kid", S(value=10)).then("k", inc)

    def merge(p, k):
        p.value = k.value

    return state(run(C.Cadence("p", S()).child("c", kid, merge)))


rec("child", child)
rec("repr", lambda: repr(C.Cadence("c", S()).then("a", inc)))
rec("get_score", lambda: state(C.Cadence("c", S(value=4)).get_score()))
rec(
    "errors_ctor",
    lambda: [
        str(C.NoteError("m", note_name="n")),
        str(C.TimeoutError("n", 2.0)),
        str(C.RetryExhaustedError("n", 3, ValueError("v"))),
        str(C.Skip()),
        C.CadenceError("x").code,
        str(C.CadenceError("x", code="MINE")),
    ],
)
rec("hooks_manager", lambda: [type(C.HooksManager().add(C.CadenceHooks())).__name__])


def cp_twice():
    st = C.InMemoryCheckpointStore()
    try:
        C.Cadence("c", S()).with_checkpoint(st, "a").with_checkpoint(st, "b")
    except C.CadenceError as e:
        return e.code


rec("checkpoint_twice", cp_twice)
print(json.dumps(out, default=repr, indent=1, sort_keys=True))
