"""The seed README's (001) observability, checkpoint, diagram, CLI and advanced examples, and
every example of the design document (003), run as written (``cadence`` → ``engine``)."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field

import pytest

from engine import (
    Atomic,
    AtomicDict,
    AtomicList,
    Cadence,
    CadenceHooks,
    ImmutableScore,
    LoggingHooks,
    NoteError,
    ParallelNoteError,
    RetryExhaustedError,
    Score,
    TimingHooks,
    note,
    retry,
    to_dot,
    to_mermaid,
)
from engine.checkpoint import InMemoryCheckpointStore
from engine.events import CADENCE_FAILED, NOTE_COMPLETED, EventEmitter
from engine.tests.test_seed_examples import (
    MyScore,
    RoutedOrder,
    do_first,
    do_second,
    validate_order,
)


async def do_work(score: MyScore):
    score.value += 1


# -- README: observability -----------------------------------------------------------------


def test_readme_hooks_logging_and_timing():
    timing = TimingHooks()
    cadence = (
        Cadence("monitored", MyScore()).with_hooks([LoggingHooks(), timing]).then("note1", do_work)
    )
    asyncio.run(cadence.run())
    assert list(timing.timings) == ["note1"]


def test_readme_custom_hooks():
    printed, alerts = [], []

    def alert_team(message):
        alerts.append(message)

    class MyHooks(CadenceHooks):
        async def before_note(self, note_name, score):
            printed.append(f"Starting: {note_name}")

        async def after_note(self, note_name, score, duration, error=None):
            printed.append(f"Completed: {note_name} in {duration:.2f}s")

        async def on_error(self, note_name, score, error):
            alert_team(f"Error in {note_name}: {error}")

    def fail(score):
        raise ValueError("bad")

    cadence = (
        Cadence("hooked", MyScore())
        .with_hooks(MyHooks())
        .then("note1", do_work)
        .then("note2", fail)
    )
    with pytest.raises(NoteError):
        asyncio.run(cadence.run())
    assert printed == [
        "Starting: note1",
        "Completed: note1 in 0.00s",
        "Starting: note2",
        "Completed: note2 in 0.00s",
    ]
    assert alerts == ["Error in note2: [NOTE_ERROR] bad"]


def test_readme_prometheus_reporter():
    from prometheus_client import REGISTRY

    from engine.reporters import PrometheusReporter

    reporter = PrometheusReporter(prefix="myapp")
    cadence = Cadence("tracked", MyScore()).with_reporter(reporter.report).then("note1", do_work)
    asyncio.run(cadence.run())
    assert REGISTRY.get_sample_value("myapp_note_total", {"note": "note1"}) == 1.0


def test_readme_opentelemetry_reporter():
    from engine.reporters import OpenTelemetryReporter

    reporter = OpenTelemetryReporter(service_name="my-service")
    cadence = Cadence("traced", MyScore()).with_reporter(reporter.report).then("note1", do_work)
    assert asyncio.run(cadence.run()).value == 1


def test_readme_event_emitter():
    done, alerts, audit_log = [], [], []

    def alert(message):
        alerts.append(message)

    def process_payment_fails(score):
        raise ConnectionError("card declined")

    emitter = EventEmitter()
    emitter.on(NOTE_COMPLETED, lambda e: done.append(f"{e.note_name} done in {e.duration:.2f}s"))
    emitter.on(CADENCE_FAILED, lambda e: alert(f"{e.cadence_name} failed: {e.error}"))
    emitter.on("*", lambda e: audit_log.append(e.type))  # wildcard for all events

    cadence = (
        Cadence("checkout", RoutedOrder())
        .with_hooks(emitter)
        .then("validate", validate_order)
        .then("charge", process_payment_fails)
    )
    with pytest.raises(NoteError):
        asyncio.run(cadence.run())
    assert done == ["validate done in 0.00s"]
    assert alerts == ["checkout failed: [NOTE_ERROR] card declined"]
    assert audit_log == [
        "cadence.started",
        "note.started",
        "note.completed",
        "note.started",
        "note.failed",
        "cadence.failed",
    ]


# -- README: checkpointing ---------------------------------------------------------------


@dataclass
class DisburseScore(Score):
    order_id: str = ""
    log: list = field(default_factory=list)


def test_readme_checkpoint_resume():
    crashes = {"charge": True}
    calls = []

    async def validate(score):
        calls.append("validate")

    async def charge(score):
        calls.append("charge")
        if crashes["charge"]:
            raise ConnectionError("crash")

    async def disburse(score):
        calls.append("disburse")

    store = InMemoryCheckpointStore()

    def build():
        return (
            Cadence("disburse", DisburseScore(order_id="ORD-123"))
            .with_checkpoint(store, run_id="order-123")
            .then("validate", validate)
            .then("charge", charge)  # if it crashes here...
            .then("disburse", disburse)
        )

    with pytest.raises(NoteError):
        asyncio.run(build().run())
    crashes["charge"] = False
    asyncio.run(build().run())  # ...re-run skips validate, resumes from charge
    assert calls == ["validate", "charge", "charge", "disburse"]


# -- README: diagrams and CLI ----------------------------------------------------------------


def test_readme_diagrams():
    my_cadence = (
        Cadence("checkout", MyScore()).then("note1", do_work).sync("both", [do_first, do_second])
    )
    assert to_mermaid(my_cadence).startswith("flowchart TD\n    START([checkout])")
    assert to_dot(my_cadence).startswith("digraph cadence {")
    # the engine's own layout (children nested) on request
    assert to_dot(my_cadence, form="flow").startswith('digraph "checkout" {')


def test_readme_cli(tmp_path, monkeypatch, capsys):
    from engine.cli import main

    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cadences.py").write_text(
        "from engine import Cadence\n\nasync def go(score):\n    pass\n\ncheckout_cadence = Cadence('checkout').then('go', go)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["init", "my-project"]) == 0
    assert main(["new", "cadence", "checkout"]) == 0
    assert main(["new", "note", "process-payment", "--retry", "3", "--timeout", "30"]) == 0
    assert main(["diagram", "myapp.cadences:checkout_cadence", "--format", "mermaid"]) == 0
    assert main(["validate", "myapp.cadences"]) == 0
    out = capsys.readouterr().out
    assert "@note(retry=3, timeout=30)\nasync def process_payment(score) -> None:" in out
    assert "OK myapp.cadences:checkout_cadence sha256=" in out


# -- README: advanced ------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ImmutableScore):
    api_key: str
    timeout: int = 30


def test_readme_immutable_score():
    config = Config(api_key="k")
    # Create new score with changes
    new_config = config.with_field("timeout", 60)
    assert (config.timeout, new_config.timeout) == (30, 60)


@dataclass
class AggregatorScore(Score):
    results: AtomicList = None
    cache: AtomicDict = None

    def __post_init__(self):
        super().__post_init__()
        self.results = AtomicList()
        self.cache = AtomicDict()


def test_readme_atomic_score():
    score = AggregatorScore()
    new_result, value = "r", "v"
    # Safe concurrent updates
    score.results.append(new_result)
    score.cache["key"] = value
    assert (score.results.snapshot(), score.cache.snapshot()) == (["r"], {"key": "v"})
    assert Atomic(1).update(lambda v: v + 1) == 2


def test_readme_error_handling_continue():
    logged = []

    class Logger:
        def error(self, message):
            logged.append(message)

    logger = Logger()

    def risky_operation(score):
        raise ValueError("risky")

    def cleanup(score):
        score.value = 99

    async def handle_error(score, error):
        if isinstance(error, NoteError):
            logger.error(f"Note {error.note_name} failed: {error}")
            score.errors.append(str(error))

    cadence = (
        Cadence("handled", MyScore())
        .then("risky", risky_operation)
        .on_error(handle_error, stop=False)  # Continue on error
        .then("cleanup", cleanup)
    )
    result = asyncio.run(cadence.run())
    assert result.errors == ["[NOTE_ERROR] risky"]
    assert (result.value, logged) == (
        99,
        ["Note risky failed: [NOTE_ERROR] risky"],
    )


def test_readme_parallel_note_error():
    async def ok(score):
        pass

    async def broken(score):
        raise TimeoutError("upstream")

    cadence = Cadence("fanout", MyScore()).sync("fetch", [ok, broken])
    printed = []
    try:
        asyncio.run(cadence.run())
    except ParallelNoteError as e:
        printed.append(
            f"Task '{e.note_name}' (index {e.task_index}) in group '{e.group_name}' failed: {e.original_error}"
        )
    assert printed == ["Task 'broken' (index 1) in group 'fetch' failed: upstream"]


# -- design document ------------------------------------------------------------------------


def test_design_explicit_flow_and_composition():
    @dataclass
    class Flow(Score):
        steps: list = field(default_factory=list)
        premium: bool = True
        user: str = ""
        stock: int = 0
        auth: str = ""

    async def fetch_user(score):
        score.user = "ada"

    def fetch_inventory(score):
        score.stock = 3

    def is_premium(score):
        return score.premium

    def priority(score):
        score.steps.append("priority")

    def standard(score):
        score.steps.append("standard")

    def finalize(score):
        score.steps.append("finalize")

    score = Flow()
    # Explicit: You can see the entire flow structure
    cadence = (
        Cadence("checkout", score)
        .then("validate", validate_order)
        .sync("enrich", [fetch_user, fetch_inventory])
        .split("route", is_premium, [priority], [standard])
        .then("finalize", finalize)
    )
    result = asyncio.run(cadence.run())
    assert (result.steps, result.user, result.stock) == (
        ["validate", "priority", "finalize"],
        "ada",
        3,
    )

    auth_cadence = Cadence("auth", Flow()).then("login", fetch_user)
    process_cadence = Cadence("process", Flow()).then("count", fetch_inventory)

    def merge_auth(parent, child):
        parent.auth = child.user

    def merge_result(parent, child):
        parent.stock = child.stock * 2

    # Compose child cadences
    main_cadence = (
        Cadence("main", Flow())
        .child("auth", auth_cadence, merge_auth)
        .child("process", process_cadence, merge_result)
    )
    result = asyncio.run(main_cadence.run())
    assert (result.auth, result.stock) == ("ada", 6)


def test_design_note_score_reporter_and_merge_signatures(clock):
    @dataclass
    class DesignOrder(Score):
        order_id: str = "o"
        items: list = None
        total: float = 0.0
        payment_status: str = ""

    async def charge(total):
        return f"charged {total}"

    @note
    async def process_payment(score: DesignOrder) -> None:
        score.payment_status = await charge(score.total)

    reports = []

    def my_reporter(note_name: str, elapsed: float, score) -> None:
        reports.append(note_name)

    def my_merge(original: Score, changes: list[dict]) -> None:
        for change in changes:
            for key, value in change.items():
                setattr(original, key, value)

    async def set_total(score):
        score.total = 5.0

    cadence = (
        Cadence("design", DesignOrder())
        .with_reporter(my_reporter)
        .sync("price", [set_total], merge_strategy=my_merge)
        .then("pay", process_payment)
    )
    result = asyncio.run(cadence.run())
    assert (result.payment_status, reports) == ("charged 5.0", ["price[0]", "pay", "design:TOTAL"])

    # Retry: "Attempt N → Fail → Raise exception"
    @retry(max_attempts=3, delay=1.0)
    async def always_fails(score):
        raise OSError("no")

    with pytest.raises(RetryExhaustedError) as info:
        asyncio.run(always_fails(result))
    assert (info.value.attempts, clock.sleeps) == (3, [1.0, 2.0])


def test_design_mutable_score_and_atomic_default_factories():
    @dataclass
    class Value(Score):
        value: int = 0

    score = Value()
    score.value = 42  # Direct mutation
    assert score.value == 42

    @dataclass
    class Aggregator(Score):
        results: AtomicList = field(default_factory=AtomicList)
        cache: AtomicDict = field(default_factory=AtomicDict)

    async def add(score):
        score.results.append(1)
        score.cache["k"] = 1

    result = asyncio.run(Cadence("agg", Aggregator()).sync("g", [add, add]).run())
    assert (result.results.snapshot(), result.cache.snapshot()) == ([1, 1], {"k": 1})


def test_design_custom_hooks_before_note_signature():
    seen = []

    class MyHooks(CadenceHooks):
        async def before_note(self, name, score):
            # Custom logic before each note
            seen.append(name)

    asyncio.run(Cadence("h", MyScore()).with_hooks(MyHooks()).then("n", do_work).run())
    assert seen == ["n"]


def test_console_reporter_is_available_for_quick_debugging():
    from engine.reporters import ConsoleReporter

    stream = io.StringIO()
    asyncio.run(
        Cadence("c", MyScore()).with_reporter(ConsoleReporter(stream)).then("n", do_work).run()
    )
    assert stream.getvalue().count("\n") == 2
