"""Engine overhead: microseconds per note, beside the same work written in raw asyncio.

Run: .venv/bin/python benchmarks/engine_overhead.py  (prints every figure and its target).
Each figure is the best of several repeats, so it measures the engine rather than the noise.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import Cadence, CadenceHooks, EventEmitter, Score  # noqa: E402
from engine.events import CADENCE_COMPLETED, NOTE_COMPLETED  # noqa: E402

REPEATS = 7


@dataclass
class Counter(Score):
    n: int = 0


def make_notes(count: int) -> list:
    notes = []
    for i in range(count):

        async def bump(score: Counter) -> None:
            score.n += 1

        bump.__name__ = f"note_{i}"
        notes.append(bump)
    return notes


def chain(notes: list, name: str = "chain") -> Cadence:
    cadence = Cadence(name, Counter())
    for fn in notes:
        cadence.then(fn.__name__, fn)
    return cadence


class CountingHooks(CadenceHooks):
    def __init__(self) -> None:
        self.notes = 0

    def after_note(self, note_name, score, duration, error=None) -> None:
        self.notes += 1


async def best(fn, runs: int, notes_per_run: int) -> float:
    """Best µs per note over REPEATS batches of ``runs`` calls."""
    return (await interleaved({"x": fn}, runs, notes_per_run))["x"]


async def interleaved(fns: dict, runs: int, notes_per_run: int, repeats: int = REPEATS) -> dict:
    """Best µs per note of each variant, the variants' batches alternating so that a busy
    machine slows them all alike (the ratios between them are what the targets are about)."""
    results = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            for _ in range(runs):
                await fn()
            results[name] = min(
                results[name], (time.perf_counter() - start) / (runs * notes_per_run) * 1e6
            )
    return results


async def measure() -> list[tuple[str, float, float, str, bool]]:
    rows = []
    notes20 = make_notes(20)
    notes10 = make_notes(10)

    # 1. a chain of 20 async notes (measured together with the observed variants of 4.)
    bare = chain(notes20)

    async def engine_chain() -> None:
        await bare.run(Counter())

    async def raw_chain() -> None:
        score = Counter()
        for fn in notes20:
            await fn(score)

    # 4. the chain of 20 with hooks and an event emitter attached: a hook implementing
    # after_note, an emitter listening to the cadence's end; then the same with a listener on
    # every note too (an event object per note and a call into user code: the costly case).
    run_events: list = []
    emitter = EventEmitter()
    emitter.on(CADENCE_COMPLETED, run_events.append)
    observed = chain(notes20, "observed").with_hooks([CountingHooks(), emitter])

    async def engine_observed() -> None:
        await observed.run(Counter())
        run_events.clear()

    note_events: list = []
    busy = EventEmitter()
    busy.on(CADENCE_COMPLETED, run_events.append)
    busy.on(NOTE_COMPLETED, note_events.append)
    per_note = chain(notes20, "per_note").with_hooks([CountingHooks(), busy])

    async def engine_per_note() -> None:
        await per_note.run(Counter())
        note_events.clear()
        run_events.clear()

    chains = await interleaved(
        {
            "raw": raw_chain,
            "bare": engine_chain,
            "observed": engine_observed,
            "per_note": engine_per_note,
        },
        1000,
        20,
        repeats=15,
    )
    chain_us = chains["bare"]
    rows.append(("chain of 20 .then", chain_us, chains["raw"], "<= 1.5", chain_us <= 1.5))

    # 2. a .sync of 10
    group = Cadence("sync", Counter()).sync("group", notes10, merge_strategy="last_write_wins")

    async def engine_sync() -> None:
        await group.run(Counter())

    async def raw_sync() -> None:
        score = Counter()
        async with asyncio.TaskGroup() as tg:
            for fn in notes10:
                tg.create_task(fn(score))

    sync_us = await best(engine_sync, 1000, 10)
    rows.append((".sync of 10", sync_us, await best(raw_sync, 1000, 10), "<= 20", sync_us <= 20))

    # 3. a .split into 10
    def always(score: Counter) -> bool:
        return True

    branch = Cadence("split", Counter()).split("route", always, notes10)

    async def engine_split() -> None:
        await branch.run(Counter())

    async def raw_split() -> None:
        score = Counter()
        if always(score):
            for fn in notes10:
                await fn(score)

    split_us = await best(engine_split, 5000, 10)
    rows.append(
        (".split into 10", split_us, await best(raw_split, 5000, 10), "<= 1.0", split_us <= 1.0)
    )

    limit = 3 * chain_us
    hooks_us, per_note_us = chains["observed"], chains["per_note"]
    rows.append(
        (
            "chain 20 + hooks + emitter",
            hooks_us,
            chain_us,
            f"<= 3x bare ({limit:.2f})",
            hooks_us <= limit,
        )
    )
    rows.append(
        (
            "  ... + a listener on every note",
            per_note_us,
            chain_us,
            f"<= 3x bare ({limit:.2f})",
            per_note_us <= limit,
        )
    )

    # 5. construction plus run
    async def build_and_run() -> None:
        await chain(notes20).run(Counter())

    build_us = await best(build_and_run, 2000, 20)
    rows.append(("build + run chain of 20", build_us, chain_us, "(bare run beside)", True))
    return rows


MEMORY_SCRIPT = r"""
import asyncio, resource, sys, gc
from dataclasses import dataclass, field
sys.path.insert(0, sys.argv[1])
from engine import Cadence, Score

RUNS = 10_000
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

@dataclass
class Order(Score):
    order_id: int = 0
    items: list = field(default_factory=list)
    total: float = 0.0
    status: str = "new"
    note: str = ""

async def main():
    gate = asyncio.Event()
    arrived = [0]

    async def validate(score):
        arrived[0] += 1
        if arrived[0] == RUNS:
            gate.set()
        await gate.wait()          # hold every run in flight at once
        score.items = [1, 2, 3]

    async def price(score):
        await asyncio.sleep(0)
        score.total = 6.0

    async def annotate(score):
        await asyncio.sleep(0)
        score.note = "ok"

    async def finish(score):
        score.status = "done"

    cadence = (Cadence("order", Order()).then("validate", validate)
               .sync("enrich", [price, annotate]).then("finish", finish))
    results = await asyncio.gather(*(cadence.run(Order(order_id=i)) for i in range(RUNS)))
    assert all(r.status == "done" and r.total == 6.0 and r.note == "ok" for r in results)

asyncio.run(main())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{baseline} {peak}")
"""


def memory() -> tuple[float, float]:
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, root], capture_output=True, text=True, check=True
    )
    baseline_kb, peak_kb = (int(x) for x in out.stdout.split())
    return baseline_kb / 1024, peak_kb / 1024  # Linux reports ru_maxrss in KiB


def main() -> None:
    rows = asyncio.run(measure())
    print(f"{'benchmark':32} {'engine µs/note':>15} {'raw asyncio':>12}  target")  # noqa: T201
    for name, engine_us, raw_us, target, ok in rows:
        print(f"{name:32} {engine_us:15.3f} {raw_us:12.3f}  {target} {'OK' if ok else 'MISSED'}")  # noqa: T201
    baseline, peak = memory()
    mem_ok = peak < 80
    print(  # noqa: T201
        f"{'10,000 concurrent runs (4 measures)':32} peak RSS {peak:.1f} MB (interpreter + engine alone: {baseline:.1f} MB)"
        f"  target < 80 MB {'OK' if mem_ok else 'MISSED'}"
    )
    summary = {name: round(engine_us, 3) for name, engine_us, *_ in rows}
    summary["peak_rss_mb"] = round(peak, 1)
    print(json.dumps(summary))  # noqa: T201


if __name__ == "__main__":
    main()
