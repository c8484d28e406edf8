"""Engine overhead: microseconds per note, beside raw asyncio and the published library.

Run: .venv/bin/python benchmarks/engine_overhead.py [--library SITE_PACKAGES] [--repeats N]

Prints every figure and its target. The library (``cadence-orchestration``, the package
``cadence``) is measured in the same run, in the same process, when it can be imported: from
``--library`` (a site-packages directory holding ``cadence``), else this interpreter (it is a
development requirement, requirements-dev.txt), else ``$CADENCE_LIBRARY_SITE``, else the scratch
venv ``/tmp/cadence-lib-venv`` if present.

Every variant of a figure runs in alternating batches and keeps its best batch, timed in CPU
time of this process (``time.process_time``), so a machine busy with other work slows all
variants alike and the ratios (what the targets are about) stay meaningful.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import glob
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import Cadence, CadenceHooks, EventEmitter, Score  # noqa: E402
from engine.events import CADENCE_COMPLETED, NOTE_COMPLETED  # noqa: E402

REPEATS = 9
SCRATCH_SITE = "/tmp/cadence-lib-venv/lib/python3*/site-packages"


@dataclass
class Counter(Score):
    n: int = 0


def make_notes(count: int) -> list:
    notes = []
    for i in range(count):

        async def bump(score: Any) -> None:
            score.n += 1

        bump.__name__ = f"note_{i}"
        notes.append(bump)
    return notes


def chain(notes: list, name: str = "chain", cadence_cls: Any = Cadence, score: Any = None) -> Any:
    cadence = cadence_cls(name, score if score is not None else Counter())
    for fn in notes:
        cadence.then(fn.__name__, fn)
    return cadence


class CountingHooks(CadenceHooks):
    def __init__(self) -> None:
        self.notes = 0

    def after_note(self, note_name, score, duration, error=None) -> None:
        self.notes += 1


async def interleaved(fns: dict, runs: int, notes_per_run: int, repeats: int = REPEATS) -> dict:
    """Best µs per note of each variant, the variants' batches alternating."""
    results = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            start = time.process_time()
            for _ in range(runs):
                await fn()
            elapsed = time.process_time() - start
            results[name] = min(results[name], elapsed / (runs * notes_per_run) * 1e6)
    return results


def load_library(site: str | None) -> Any:
    """The library's ``cadence`` package, or None when it cannot be found."""
    if not site and importlib.util.find_spec("cadence") is not None:
        return importlib.import_module("cadence")
    candidates = [site] if site else []
    if os.environ.get("CADENCE_LIBRARY_SITE"):
        candidates.append(os.environ["CADENCE_LIBRARY_SITE"])
    candidates += sorted(glob.glob(SCRATCH_SITE))
    for path in candidates:
        if path and (Path(path) / "cadence" / "__init__.py").exists():
            sys.path.append(path)
            try:
                return importlib.import_module("cadence")
            except ImportError:
                sys.path.remove(path)
    return None


class Side:
    """One implementation under test: the engine, or the library."""

    def __init__(self, lib: Any, label: str) -> None:
        self.label = label
        self.lib = lib
        self.events = importlib.import_module(f"{lib.__name__}.events")
        self.Score = make_dataclass(f"{label}Counter", [("n", int, 0)], bases=(lib.Score,))
        self.lww = lib.MergeStrategy.last_write_wins

    def chain(self, notes: list, name: str = "chain") -> Any:
        return chain(notes, name, self.lib.Cadence, self.Score())

    def variants(self, notes20: list, notes10: list) -> dict[str, dict[str, Any]]:
        """Per figure, this side's coroutine functions (one run each)."""
        lib, new = self.lib, self.Score
        bare = self.chain(notes20)
        idle = self.chain(notes20, "idle").with_hooks(lib.EventEmitter())
        heard: list = []
        emitter = lib.EventEmitter()
        emitter.on(self.events.NOTE_COMPLETED, heard.append)
        busy = self.chain(notes20, "busy").with_hooks(emitter)
        group = lib.Cadence("sync", new()).sync("group", notes10, merge_strategy=self.lww)
        branch = lib.Cadence("split", new()).split("route", _always, notes10)

        if self.label == "engine":  # the engine runs any score it is given: no wrapper

            async def run_bare() -> None:
                await bare.run(new())

            async def run_idle() -> None:
                await idle.run(new())

            async def run_busy() -> None:
                await busy.run(new())
                heard.clear()

            async def run_sync() -> None:
                await group.run(new())

            async def run_split() -> None:
                await branch.run(new())

        else:

            async def run_bare() -> None:
                await _run_library(bare, new)

            async def run_idle() -> None:
                await _run_library(idle, new)

            async def run_busy() -> None:
                await _run_library(busy, new)
                heard.clear()

            async def run_sync() -> None:
                await _run_library(group, new)

            async def run_split() -> None:
                await _run_library(branch, new)

        return {
            "chain": {"bare": run_bare, "idle": run_idle, "busy": run_busy},
            "sync": {"sync": run_sync},
            "split": {"split": run_split},
        }


def _always(score: Any) -> bool:
    return True


async def _run_library(cadence: Any, new: Any) -> None:
    # The library runs a cadence on its own score only: give it a fresh one per run.
    cadence._score = new()
    for measure in cadence._measures:
        measure._score = cadence._score
    await cadence.run()


def measure(library: Any, repeats: int) -> list[tuple[str, float, float, float | None, str, bool]]:
    rows = []
    notes20, notes10 = make_notes(20), make_notes(10)
    sides = [Side(importlib.import_module("engine"), "engine")]
    if library is not None:
        sides.append(Side(library, "library"))
    variants = [side.variants(notes20, notes10) for side in sides]

    async def raw_chain() -> None:
        score = Counter()
        for fn in notes20:
            await fn(score)

    async def raw_sync() -> None:
        score = Counter()
        async with asyncio.TaskGroup() as tg:
            for fn in notes10:
                tg.create_task(fn(score))

    async def raw_split() -> None:
        score = Counter()
        if _always(score):
            for fn in notes10:
                await fn(score)

    # The engine's former observed case: an after-note hook plus an emitter (3x target).
    run_events: list = []
    note_events: list = []
    emitter = EventEmitter()
    emitter.on(CADENCE_COMPLETED, run_events.append)
    observed = chain(notes20, "observed").with_hooks([CountingHooks(), emitter])
    busy = EventEmitter()
    busy.on(CADENCE_COMPLETED, run_events.append)
    busy.on(NOTE_COMPLETED, note_events.append)
    per_note = chain(notes20, "per_note").with_hooks([CountingHooks(), busy])

    async def engine_observed() -> None:
        await observed.run(Counter())
        run_events.clear()

    async def engine_per_note() -> None:
        await per_note.run(Counter())
        note_events.clear()
        run_events.clear()

    def table(name: str, raw: Any, runs: int, notes: int, extra: dict | None = None) -> dict:
        fns = {"raw": raw} if raw is not None else {}
        for side, v in zip(sides, variants, strict=True):
            for key, fn in v[name].items():
                fns[f"{side.label}.{key}"] = fn
        fns.update(extra or {})
        return asyncio.run(interleaved(fns, runs, notes, repeats))

    chains = table(
        "chain", raw_chain, 500, 20, {"observed": engine_observed, "per_note": engine_per_note}
    )
    syncs = table("sync", raw_sync, 500, 10)
    splits = table("split", raw_split, 2000, 10)
    lib = library is not None

    def lib_figure(figures: dict, key: str) -> float | None:
        return figures.get(f"library.{key}") if lib else None

    bare = chains["engine.bare"]
    for label, figures, key in (
        ("chain of 20 .then", chains, "bare"),
        (".sync of 10", syncs, "sync"),
        (".split into 10", splits, "split"),
    ):
        engine_us, raw_us = figures[f"engine.{key}"], figures["raw"]
        limit = 1.5 * raw_us
        rows.append(
            (
                label,
                engine_us,
                raw_us,
                lib_figure(figures, key),
                f"<= 1.5x raw ({limit:.3f})",
                engine_us <= limit,
            )
        )
    for label, key, factor in (
        ("chain 20 + emitter, no listener", "idle", 1.2),
        ("chain 20 + listener on every note", "busy", 2.0),
    ):
        engine_us = chains[f"engine.{key}"]
        limit = factor * bare
        rows.append(
            (
                label,
                engine_us,
                bare,
                lib_figure(chains, key),
                f"<= {factor}x bare ({limit:.3f})",
                engine_us <= limit,
            )
        )
    limit = 3 * bare
    for label, key in (
        ("chain 20 + hooks + emitter", "observed"),
        ("  ... + a listener on every note", "per_note"),
    ):
        rows.append(
            (label, chains[key], bare, None, f"<= 3x bare ({limit:.3f})", chains[key] <= limit)
        )
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", help="site-packages directory holding the library's cadence")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    library = load_library(args.library)
    rows = measure(library, args.repeats)
    version = getattr(library, "__version__", None)
    lib_head = f"library {version}" if library is not None else "library (not found)"
    print(  # noqa: T201
        f"{'benchmark':34} {'engine µs/note':>15} {'beside':>10} {lib_head:>16}  target"
    )
    for name, engine_us, beside_us, lib_us, target, ok in rows:
        lib_text = f"{lib_us:16.3f}" if lib_us is not None else f"{'-':>16}"
        print(  # noqa: T201
            f"{name:34} {engine_us:15.3f} {beside_us:10.3f} {lib_text}  {target} {'OK' if ok else 'MISSED'}"
        )
    print("(beside: raw asyncio for the first three rows, the bare engine chain below)")  # noqa: T201
    baseline, peak = memory()
    mem_ok = peak < 80
    print(  # noqa: T201
        f"{'10,000 concurrent runs (4 measures)':34} peak RSS {peak:.1f} MB (interpreter + engine alone: {baseline:.1f} MB)"
        f"  target < 80 MB {'OK' if mem_ok else 'MISSED'}"
    )
    summary: dict[str, Any] = {name.strip(): round(engine_us, 3) for name, engine_us, *_ in rows}
    summary["library"] = {
        name.strip(): round(lib_us, 3) for name, _, _, lib_us, _, _ in rows if lib_us is not None
    }
    summary["peak_rss_mb"] = round(peak, 1)
    print(json.dumps(summary))  # noqa: T201


if __name__ == "__main__":
    main()
