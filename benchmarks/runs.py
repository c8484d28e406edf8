"""Recording overhead: what step records cost a run, recording on against off.

    .venv/bin/python benchmarks/runs.py [--runs 2000] [--turns 300] [--skip-served]
        [--database SCRATCH_NAME] [--profile FILE] [--against OTHER_CHECKOUT]

1. A 20-step native flow (engine notes over a small score): bare, then with the tracing hooks
   the native adapter attaches (a step id, parent, score snapshots, the fields read, CPU and RSS
   per measure) feeding StepEvents (as the adapter makes them) into the run recorder, whose
   publisher is attached as in a turn (engine/runs/live.py; REDIS_URL). Nobody watches these
   runs, as nobody watches most runs: their frames are not built or written (a publisher starts
   only once a run socket marks its run watched). Then the same with every run watched from its
   start (every step's frames built and written to the run's Redis stream), reported beside it.
   Reported: µs of CPU (process_time) per step of recording, including what `finish` builds for
   its one bulk insert. Target: ≤ 50 µs per step (unwatched runs).
2. Served turns: the share of a turn's server CPU that recording takes. Two real servers
   (uvicorn, as `make run` serves) on a scratch database, one as shipped and one with step
   recording off (benchmarks/runs_unrecorded.py: flows untraced, runtime events not recorded;
   the run's row and outcome, the messages and the run feed still written). Each turn is what a
   client's REST chat turn costs the server: `POST …/conversations/<id>/messages/` with an API
   key (key check, the user's message stored, the turn through the pipeline on a 20-step native
   flow — prepare_prompt, agent with its model call to the offline model, 18 notes — the run
   recorded, the reply stored), each in a conversation of its own created beforehand. Turns
   alternate between the two servers, one at a time, so both see the same machine; each
   server's CPU (user + system, all threads, from /proc) over its turns, per turn. The
   database server's own CPU is in neither. Reported: recording's share = (on − off) / on.
   Target: ≤ 15% of a turn's server CPU. A third server, recording on but no execution proof
   (benchmarks/runs_unproven.py), tells how much of that is the proof (engine/trust) chaining
   the steps' records, which the "off" server proves with no steps. For comparison, the old figure: the same share against
   the bare runtime (NativeRuntime.stream on the default 3-note flow, no server, no database).
   `--profile FILE` samples the "on" server with py-spy (--gil, raw stacks) for the shares of its
   CPU; py-spy's sampling is charged to that server (+40-50 ms a turn), so take the figures
   from a run without it. `--against DIR` also serves another checkout's "on" and "off" (say
   main's worktree) on the same database, their turns alternating with these: an A/B in one
   window, which the machine's load moves much less than two runs apart.

Measured 2026-12-06 (2 cores shared with other workers, load 9-15; `--runs 500` and 300 turns
per server, the third pair `--runs 300 --turns 200`; this branch and the previous main run side
by side, same load). Before (main 0d11650): share 16.7%, 15.0%, 16.1% (on / off 63.07 / 52.53,
67.17 / 57.07, 61.35 / 51.45 ms), earlier alone 17.4%. After (proof from the recorder's rows,
the steps' hashing composed, steps by COPY): share 14.3%, 12.6%, 14.6% (60.47 / 51.83,
64.17 / 56.07, 58.25 / 49.75 ms): recording (on - off) 1.4-2.0 ms less per turn, the share
1.5-2.4 points lower in each pair.
The "unproven" server splits the share only roughly at this load (it moved 6-13% either way).
py-spy --gil shares of the "on" server: the proof (prove_run) 8.2% -> 4.7% (its read back
1.9% -> 0, hash chain 3.2% -> 2.0%), the steps' insert 2.0% -> 0.9%, RunRecorder.finish with
everything inside its transaction 14.7% -> 10.4%. Per step (part 1): 41-55 µs before, 43-48
after, at this load (24.8-33.4 on a quiet machine).
Those servers ran in test mode (they inherited this process's CADENCE_TESTING=1: no connection
pool, limits read afresh on every turn), a turn of ~50-60 ms where a shipped server spends ~25-35.
Since 2026-12-06 the servers run as shipped (CADENCE_TESTING=0). The same tree (ffa4152), load
~5: on 33.65 / off 26.15 ms, share 22.3%; the proof 15.9% of a turn (unproven 28.30 ms).

2026-12-06, branch proof (from main 1adefa5): the signer writes RFC 8785 bytes through orjson
(C) for the values the verifier's own fast path takes, held to rfc8785 and to the verifier by
tests (engine/trust/canonical.py; the standalone verifier is unchanged); a step's record walked
once (proofs.step_fields: made jsonable only where the fast path refuses it), the payload column
written from the signed canonical text, the jsonb decoder, COPY statement and frame encoders
built once. Where on - off went before (py-spy --gil of an "on" and an "off" server, in-process
CPU per function): the proof's canonical JSON (six stdlib-encoder passes per step) ~0.9 ms a
turn with the records it walked, the engine's tracing hooks (two score snapshots and two
getrusage per step) ~0.9 ms, the steps' COPY ~0.3-0.5 ms, the rows' data parsed back ~0.3 ms,
the chat's step frames ~0.4 ms (one in-process ablation, noisy).
- `--runs 300 --turns 300`, main and branch alternated, load 8-10: main share 17.4% (on 21.40 /
  off 17.67 ms), 16.9% (23.73 / 19.73); branch 13.2% (20.90 / 18.13), 13.9% (23.03 / 19.83);
  the proof (on - unproven) 15.6-16.2% of a turn -> 9.3-9.7%.
- A/B in one window (four servers, main's on/off and the branch's, as `--against` now does;
  3 x 300 turns, load 3-9): main 15.9%, 16.4%, 17.1% (on 19.67-20.17 / off 16.43-16.87 ms);
  branch 13.6%, 13.6%, 13.8% (on 18.57-19.10 / off 16.03-16.50); the branch's "on" 0.87-1.27
  ms less per turn (the "off" server proves too, with no steps: 0.3-0.4 ms less). An earlier
  window at load 7-9, before the frame encoders: main 19.7-21.6%, branch 16.6-17.9%, on
  0.93-1.23 ms less.
- `--runs 200 --against <main's worktree>`, `--turns 300` then `400` (five servers), load 6-10:
  branch 14.1%, 13.8% (on 20.73 / off 17.80, 19.88 / 17.12 ms), main 16.5%, 16.6% (20.87 /
  17.43, 20.60 / 17.18); the branch's "on" 0.13 and 0.72 ms less (single differences of
  servers under this load move by ~0.4 ms; the share is steadier).
- After merging main 4d1e9d1 (proofs written with their runs, sequenced after the commit), the
  same command against main 4d1e9d1, `--turns 300`, twice, load 6-7.5: branch 12.6%, 12.5% (on
  20.10 / off 17.57, 20.80 / 18.20 ms; the proof 9.6%, 11.2% of a turn), main 16.7%, 19.0%
  (20.93 / 17.43, 21.80 / 17.67); the branch's "on" 0.83 and 1.00 ms less.
Part 1 (no server) 20-22 µs per step either way: it never proves.
Quiet, after the merge (main, 2026-12-06 12:48-12:51, load 1.6-2.3, `--runs 300 --turns 300`,
three runs): per step 19.5-19.7 µs (watched from the start: 54.0); served share 14.2%, 13.3%,
13.9% (on 17.57 / off 15.07, 17.53 / 15.20, 15.87 / 13.67 ms); the proof 11.0-13.9% of a turn.
(This session's machine is faster than the one of the 33.05 / 26.45 ms figures above.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

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


def bench_flow(runs: int, watched: bool = False) -> tuple[float, float]:
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
        made = _publishing(
            RunRecorder(
                schema_name="bench",
                orchestrator_id=None,
                orchestrator_slug="bench",
                config_hash="",
                trigger="invoke",
            )
        )
        if watched:  # as when a run socket's mark is found at the run's start
            made.publisher.watch()
        return made

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
    for _ in range(runs):  # what finish builds before its one bulk insert (the steps' document)
        orjson.dumps([row.record() for row in recorder_box[0].events])
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


# --- served turns -------------------------------------------------------------------------------

DB_NAME = "cadence_bench_runs_served"
ORG_SLUG = "runsbench"
ORCHESTRATOR = "twenty"


def _served_flow() -> dict:
    steps = [{"then": "prepare_prompt"}, {"then": "agent"}]
    steps += [{"then": f"note_{j}", "note": "finalize"} for j in range(STEPS - 2)]
    return {"name": "twenty", "description": "20 steps, one model call.", "steps": steps}


def _served_setup() -> str:
    """An organization on a generous plan, its owner's API key, the 20-step orchestrator."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django_tenants.utils import schema_context

    from orchestrators.models import OrchestratorInstance
    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build
    from tenants.models import Plan
    from tenants.services import organization_create

    call_command("migrate", interactive=False, verbosity=0)
    get_user_model().objects.create_user(username="runs-owner", email="runs-owner@example.test")
    plan = Plan.objects.create(
        slug="runsbench", name="Runs bench", requests_per_minute=10_000_000, max_api_keys=1000
    )
    org = organization_create(
        name="Runs bench", slug=ORG_SLUG, owner_email="runs-owner@example.test", plan=plan
    )
    with schema_context(org.organization.schema_name):
        config = llm_config_create(name="offline", provider="offline", model="cadence-offline")
        instance = orchestrator_create(
            slug=ORCHESTRATOR, name="Twenty", llm_config=config, flow=_served_flow()
        )
        instance.refresh_from_db()
        if instance.status != OrchestratorInstance.Status.READY:
            instance_build(
                schema_name=org.organization.schema_name,
                instance_id=str(instance.id),
                expected_hash=instance.config_hash,
            )
            instance.refresh_from_db()
        if instance.status != OrchestratorInstance.Status.READY:
            raise RuntimeError(f"orchestrator is {instance.status}: {instance.status_message}")
    return org.api_key_secret


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server(app: str, env: dict, cwd: str | Path = "") -> tuple[subprocess.Popen, int]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log", "--log-level", "warning", "--lifespan", "off"],
        cwd=cwd or Path(__file__).resolve().parent.parent, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, port
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{app} did not start")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_served(turns: int, profile: str = "", against: str = "") -> dict[str, float]:
    import httpx

    key = _served_setup()
    # The servers as shipped: this process sets CADENCE_TESTING for its own setup, and a server
    # inheriting it would run as under tests (no connection pool, limits read afresh each time),
    # a slower turn that made recording's share look smaller than it is.
    env = dict(os.environ, CADENCE_LOG_LEVEL="WARNING", CADENCE_TESTING="0")
    env.pop("CADENCE_CELERY_EAGER", None)
    servers = {
        "on": _server("cadence_site.asgi:application", env),
        "off": _server("benchmarks.runs_unrecorded:application", env),
        "unproven": _server("benchmarks.runs_unproven:application", env),
    }
    if against:  # another checkout's servers, on the same database, their turns alternating
        servers["on (against)"] = _server("cadence_site.asgi:application", env, against)
        servers["off (against)"] = _server("benchmarks.runs_unrecorded:application", env, against)
    base = f"/api/v1/orgs/{ORG_SLUG}/conversations/"
    try:
        clients = {
            side: httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
            )
            for side, (_, port) in servers.items()
        }
        warm = 20
        conversations: dict[str, list[str]] = {side: [] for side in servers}
        for side, client in clients.items():
            for _ in range(turns + warm):
                response = client.post(base, json={"orchestrator": ORCHESTRATOR})
                response.raise_for_status()
                conversations[side].append(response.json()["id"])

        def turn(side: str, conversation: str) -> None:
            response = clients[side].post(f"{base}{conversation}/messages/", json={"content": "hi"})
            if response.status_code != 201:
                raise RuntimeError(f"{side}: {response.status_code} {response.text[:300]}")

        for i in range(warm):
            for side in servers:
                turn(side, conversations[side][i])
        spy = None
        if profile:  # py-spy's raw stacks of the recording server, over the measured turns
            spy = subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--pid",
                 str(servers["on"][0].pid), "--format", "raw", "--rate", "250", "--threads", "--gil",
                 "--output", profile],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1)
        # Each server's CPU over all its turns (the other's turns are not in its process).
        before = {side: _cpu_seconds(process.pid) for side, (process, _) in servers.items()}
        started = time.monotonic()
        for i in range(warm, warm + turns):
            for side in servers:
                turn(side, conversations[side][i])
        time.sleep(0.2)  # what a turn does after its response (the run feed's frame)
        cpu = {
            side: _cpu_seconds(process.pid) - before[side] for side, (process, _) in servers.items()
        }
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        elapsed = time.monotonic() - started
        for client in clients.values():
            client.close()
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGINT)
        for process, _ in servers.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
    return {**{side: cpu[side] / turns for side in servers}, "elapsed": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--turns", type=int, default=300, help="served turns per server")
    parser.add_argument("--skip-served", action="store_true", help="part 1 only (no database)")
    parser.add_argument("--profile", default="", help="py-spy raw stacks of the served 'on' server")
    parser.add_argument("--database", default=DB_NAME, help="the scratch database's name")
    parser.add_argument(
        "--against",
        default="",
        help="another checkout (e.g. main's worktree): its on and off servers take turns with "
        "these, so that both trees are measured in the same window",
    )
    args = parser.parse_args()
    original = None
    if not args.skip_served:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _setup import use_scratch_database

        os.environ["CADENCE_CELERY_EAGER"] = "1"  # the build runs here, not on someone's worker
        original = use_scratch_database(args.database)
    _setup_django()
    import logging

    from django.conf import settings

    logging.disable(logging.WARNING)
    print(f"publishing run frames to {settings.REDIS_URL.split('@')[-1]}")

    off, on = bench_flow(args.runs)
    per_step = (on - off) / (args.runs * STEPS) * 1e6
    print(
        f"20-step flow, {args.runs} runs: off {off / args.runs * 1e6:.1f} µs/run, "
        f"on {on / args.runs * 1e6:.1f} µs/run"
    )
    print(f"recording overhead: {per_step:.1f} µs per step (target ≤ 50)")
    off_w, on_w = bench_flow(args.runs, watched=True)
    print(
        f"  the same runs each watched by a socket (every frame to Redis): "
        f"{(on_w - off_w) / (args.runs * STEPS) * 1e6:.1f} µs per step"
    )

    turn_runs = max(50, args.runs // 10)
    off, on = bench_turn(turn_runs)
    print(
        f"bare runtime, native turn (offline model, no server, no database), {turn_runs} turns: "
        f"off {off / turn_runs * 1e3:.3f} ms, on {on / turn_runs * 1e3:.3f} ms CPU per turn "
        f"(recording {(on - off) / on * 100:.1f}% of the runtime's CPU; not the target's measure)"
    )
    if args.skip_served:
        return
    try:
        served = bench_served(args.turns, args.profile, args.against)
    finally:
        from _setup import drop_scratch_database

        drop_scratch_database(original, args.database)
    share = (served["on"] - served["off"]) / served["on"] * 100
    print(
        f"served REST chat turns, 20-step flow, {args.turns} per server "
        f"({served['elapsed']:.0f} s): server CPU per turn: recording on "
        f"{served['on'] * 1e3:.2f} ms, off {served['off'] * 1e3:.2f} ms"
    )
    print(f"recording share of a served turn's server CPU: {share:.1f}% (target ≤ 15%)")
    print(
        f"  of which the execution proof over the steps' records: a turn without any proof "
        f"(recording on) costs {served['unproven'] * 1e3:.2f} ms "
        f"(the proof: {(served['on'] - served['unproven']) / served['on'] * 100:.1f}% of a turn)"
    )
    if args.against:
        on, off = served["on (against)"], served["off (against)"]
        print(
            f"  {args.against}, same window: recording on {on * 1e3:.2f} ms, off "
            f"{off * 1e3:.2f} ms, share {(on - off) / on * 100:.1f}%; this tree's 'on' "
            f"{(served['on'] - on) * 1e3:+.2f} ms against it"
        )


if __name__ == "__main__":
    main()
