"""Recording overhead: what step records cost a run, recording on against off.

    .venv/bin/python benchmarks/runs.py [--runs 2000]

1. A 20-step native flow (engine notes over a small score): bare, then with the tracing hooks
   the native adapter attaches (a step id, parent, score snapshots, the fields read, CPU and RSS per measure)
   feeding StepEvents into the run recorder (one RunEvent built per step), as in a turn, and the
   recorder's publisher writing every step's start and end frame to the run's Redis stream
   (engine/runs/live.py; REDIS_URL, else no Redis and the writes fail fast).
   Reported: µs per step of recording, CPU time (process_time).
2. A whole native turn (prepare_prompt → agent → finalize with the offline model, its model
   call and steps recorded) through NativeRuntime.stream, recording on against off; reported:
   the recording's share of the turn's CPU. The database write (one bulk insert per run, off
   the streaming path) is not in these figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cadence_site.settings")
os.environ.setdefault("CADENCE_TESTING", "1")

STEPS = 20


def _setup_django() -> None:
    import django

    if not os.environ.get("DATABASE_URL"):  # settings want a URL; nothing here connects
        os.environ["DATABASE_URL"] = "postgres://unused@127.0.0.1:1/unused"
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:1/0")
    django.setup()


def _flow():
    from engine import Cadence, Score
    from engine.tracing import ReadTracked

    @dataclass
    class Small(Score):
        count: int = 0
        text: str = ""
        items: list = None  # type: ignore[assignment]

    def make(i: int):
        async def note(score: Small) -> None:
            score.count += 1
            if i % 5 == 0:
                score.text = f"step {i}"

        note.__name__ = f"n{i}"
        return note

    def build() -> Cadence:
        cadence = Cadence("bench", Small(items=[]))
        for i in range(STEPS):
            cadence.then(f"n{i}", make(i))
        return cadence

    @dataclass
    class Tracked(ReadTracked, Small):
        """As the native adapter's score: the fields each note reads are recorded."""

    # Off runs on the plain score, so that read tracking counts as recording's cost.
    return build, lambda: Small(items=[1, 2, 3]), lambda: Tracked(items=[1, 2, 3])


def bench_flow(runs: int) -> tuple[float, float]:
    from engine.runs.recorder import RunRecorder
    from engine.tracing import TracingHooks
    from orchestrators.runtime import StepEvent

    build, plain, tracked = _flow()
    bare = build()
    traced = build()
    recorder_box: list[RunRecorder] = []

    def started(start) -> None:
        recorder_box[0].observe(
            StepEvent(
                start.name,
                "started",
                None,
                {"id": start.step_id, "parent": start.parent_id, "kind": start.kind},
            )
        )

    def ended(end) -> None:
        recorder_box[0].observe(
            StepEvent(
                end.name,
                end.outcome,
                end.duration * 1000,
                {
                    "id": end.step_id,
                    "parent": end.parent_id,
                    "kind": end.kind,
                    "inputs": end.inputs,
                    "outputs": end.changes,
                    "reads": end.reads,
                    "cpu_ms": end.cpu_ms,
                    "memory_kb": end.memory_kb,
                },
            )
        )

    traced.with_hooks(TracingHooks(started, ended))

    def recorder() -> RunRecorder:
        return _publishing(
            RunRecorder(
                schema_name="bench",
                orchestrator_id=None,
                orchestrator_slug="bench",
                config_hash="",
                trigger="invoke",
            )
        )

    async def go(cadence, with_recorder: bool) -> float:
        score = tracked if with_recorder else plain
        for _ in range(50):  # warm-up
            if with_recorder:
                recorder_box[:] = [recorder()]
            await cadence.run(score())
            if with_recorder:
                await recorder_box[0].publisher.close(None, None)
        t0 = time.process_time()
        for _ in range(runs):
            if with_recorder:
                recorder_box[:] = [recorder()]
            await cadence.run(score())
            if with_recorder:  # as a turn's end does: its frames written before it returns
                await recorder_box[0].publisher.close(None, None)
        return time.process_time() - t0

    off = asyncio.run(go(bare, False))
    on = asyncio.run(go(traced, True))
    assert len(recorder_box[0].events) == STEPS
    t0 = time.process_time()
    for _ in range(runs):  # what finish builds before its one bulk insert
        [row.row("00000000-0000-0000-0000-000000000000") for row in recorder_box[0].events]
    on += time.process_time() - t0
    return off, on


def _publishing(recorder):
    import uuid

    from engine.runs.live import RunPublisher

    recorder.publisher = RunPublisher(
        recorder=recorder,
        schema_name="bench",
        run_id=str(uuid.uuid4()),
        owner={"user": None, "key": None},
    )
    return recorder


def bench_turn(runs: int) -> tuple[float, float]:
    from engine.flow import build_cadence
    from engine.runs.recorder import RunRecorder
    from orchestrators.adapters.cadence import DEFAULT_FLOW, NativeAdapter, agent_notes
    from orchestrators.runtime import LLMSettings, RunContext, RuntimeConfig

    config = RuntimeConfig(
        org_slug="bench",
        instance_id="bench",
        slug="bench",
        framework="cadence",
        flow={},
        system_prompt="Be brief.",
        llm=LLMSettings(provider="offline", model="cadence-offline"),
    )
    recorded = NativeAdapter().build(config)
    unrecorded = NativeAdapter().build(config)
    unrecorded.cadence = build_cadence(DEFAULT_FLOW, agent_notes())

    async def go(runtime, record: bool) -> float:
        async def one() -> None:
            recorder = (
                _publishing(
                    RunRecorder(
                        schema_name="bench",
                        orchestrator_id=None,
                        orchestrator_slug="bench",
                        config_hash="",
                        trigger="invoke",
                    )
                )
                if record
                else None
            )
            async for event in runtime.stream([], "hello there", RunContext(org_slug="bench")):
                if recorder is not None:
                    recorder.observe(event)
            if recorder is not None:
                await recorder.publisher.close(None, None)

        for _ in range(20):
            await one()
        t0 = time.process_time()
        for _ in range(runs):
            await one()
        return time.process_time() - t0

    return asyncio.run(go(unrecorded, False)), asyncio.run(go(recorded, True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    _setup_django()
    from django.conf import settings

    print(f"publishing run frames to {settings.REDIS_URL.split('@')[-1]}")

    off, on = bench_flow(args.runs)
    per_step = (on - off) / (args.runs * STEPS) * 1e6
    print(
        f"20-step flow, {args.runs} runs: off {off / args.runs * 1e6:.1f} µs/run, "
        f"on {on / args.runs * 1e6:.1f} µs/run"
    )
    print(f"recording overhead: {per_step:.1f} µs per step (target ≤ 50)")

    turn_runs = max(50, args.runs // 10)
    off, on = bench_turn(turn_runs)
    share = (on - off) / on * 100
    print(
        f"native turn (offline model), {turn_runs} turns: off {off / turn_runs * 1e3:.3f} ms, "
        f"on {on / turn_runs * 1e3:.3f} ms CPU per turn"
    )
    print(f"recording share of the runtime's CPU per turn: {share:.1f}% (target ≤ 15% of a turn)")


if __name__ == "__main__":
    main()
