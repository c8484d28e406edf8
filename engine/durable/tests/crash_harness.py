"""Real Celery workers running queued runs, killed with SIGKILL at random points (used by
tests/test_crash.py and `benchmarks/durable.py --crash N`).

Every run calls a local HTTP tool (toolserver.ToolServer) that counts its calls per
`Idempotency-Key`. After the last run settles, the report says which runs were lost (not
succeeded), which repeated a completed step (a measure or the tool recorded twice, or a gap in
the step numbers), and which sent their tool call under more than one key (the call would have
been executed twice by a server honouring the key).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from django_tenants.utils import schema_context

from cadence_site.testing import celery_worker_argv

REPO = Path(__file__).resolve().parents[3]
# One recording of a run of conftest.TOOL_FLOW: every measure, model call and the tool once.
EXPECTED = Counter(
    {"prepare_prompt": 1, "agent": 2, "llm_call": 3, "http_get": 1, "finalize": 1, "run": 1}
)


# A flow whose second measure calls the HTTP tool and whose third streams a reply: a worker
# killed in the third resumes after the tool's measure and must not call the tool again.
TOOL_FLOW = {
    "name": "charge",
    "steps": [
        {"then": "prepare_prompt"},
        {"then": "agent"},
        {"then": "agent"},
        {"then": "finalize"},
    ],
}


def tool_orchestrator_make(*, schema: str, model: str):
    """An offline orchestrator `chargebot` with the http_get tool on TOOL_FLOW, built (ready)."""
    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build

    with schema_context(schema):
        llm = llm_config_create(name="charge-llm", provider="offline", model=model)
        instance = orchestrator_create(
            slug="chargebot", name="Chargebot", llm_config=llm, tools=["http_get"], flow=TOOL_FLOW
        )
    built = instance_build(
        schema_name=schema, instance_id=str(instance.id), expected_hash=instance.config_hash
    )
    assert built == "ready", built
    return instance


@dataclass
class CrashReport:
    runs: int
    ids: list[str] = field(default_factory=list)
    kills: int = 0
    seconds: float = 0.0
    lost: list[str] = field(default_factory=list)
    repeated: dict[str, str] = field(default_factory=dict)  # run id → what was repeated
    double_keys: dict[str, list[str]] = field(default_factory=dict)  # run id → its keys
    resent: int = 0  # tool calls cut short and sent again under their key
    resumed: int = 0  # runs that took more than one attempt

    def summary(self) -> dict:
        return {
            "runs": self.runs,
            "kills": self.kills,
            "seconds": round(self.seconds, 1),
            "runs_lost": len(self.lost),
            "steps_repeated": len(self.repeated),
            "tool_calls_under_two_keys": len(self.double_keys),
            "tool_calls_resent_same_key": self.resent,
            "runs_resumed": self.resumed,
        }


def worker_env(*, database_url: str, **extra: str) -> dict[str, str]:
    """A worker process's environment: the caller's database, Redis, broker and signing key."""
    from django.conf import settings

    from engine.trust.signing import keyring

    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CADENCE_TESTING": "1",
        "CADENCE_RUN_LEASE_SECONDS": "2",
        "CADENCE_EGRESS_ALLOW_PRIVATE": "true",
        "CADENCE_SIGNING_KEYS": keyring().current.serialize(),
        **extra,
    }


def celery_worker(queue: str, env: dict[str, str]) -> subprocess.Popen:
    name = uuid.uuid4().hex[:8]
    process = subprocess.Popen(
        celery_worker_argv(queue, name=name),
        cwd=REPO,
        env={**env, "CADENCE_WORKER_ID": name},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    process.name = name  # type: ignore[attr-defined] - its claims say `<host>:<name>:…`
    return process


def crash_run(
    *,
    instance,
    server,
    queue: str,
    runs: int,
    kills: int,
    env: dict[str, str],
    workers: int = 2,
    limit: float = 300.0,
    schema: str = "org_alpha",
    seed: int | None = None,
) -> CrashReport:
    """Enqueue `runs` runs of `instance` (on TOOL_FLOW), run them on `workers` Celery workers
    and SIGKILL one at a random moment `kills` times (a new one replaces it); the caller's
    settings route the organization's runs to `queue` and make the lease short."""
    from engine.durable import services
    from engine.durable.models import QueuedRun
    from engine.durable.tasks import orphans_sweep
    from engine.models import RunEvent

    rng = random.Random(seed)
    message = "/tool http_get " + json.dumps({"url": server.url})
    report = CrashReport(runs=runs)
    ids = report.ids
    with schema_context(schema):
        for _ in range(runs):
            queued, _ = services.queued_run_enqueue(
                instance=instance, message=message, idempotency_key=uuid.uuid4().hex
            )
            ids.append(str(queued.run_id))
    started = time.monotonic()
    pool = [celery_worker(queue, env) for _ in range(workers)]
    next_kill = started + rng.uniform(2.0, 6.0)  # workers take a few seconds to start
    last_sweep = 0.0
    try:
        while time.monotonic() - started < limit:
            with schema_context(schema):
                rows = list(
                    QueuedRun.objects.filter(run_id__in=ids).values_list("state", "claimed_by")
                )
            states = Counter(state for state, _ in rows)
            if states["succeeded"] + states["dead"] == runs:
                break
            now = time.monotonic()
            if report.kills < kills and now >= next_kill and states["running"]:
                # At a random moment, the worker holding a run (the same claim a new worker
                # may have taken again: a random one of those running now).
                holders = {by.split(":")[1] for state, by in rows if state == "running"}
                busy = [i for i, w in enumerate(pool) if w.name in holders]
                victim = rng.choice(busy) if busy else rng.randrange(len(pool))
                pool[victim].send_signal(signal.SIGKILL)
                pool[victim].wait(timeout=10)
                pool[victim] = celery_worker(queue, env)
                report.kills += 1
                next_kill = now + rng.uniform(0.5, 2.5)
            if now - last_sweep >= 0.5:
                orphans_sweep()  # beat's job: runs of killed workers, lost tokens
                last_sweep = now
            time.sleep(0.05)
    finally:
        for worker in pool:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
    report.seconds = time.monotonic() - started
    with schema_context(schema):
        queued = {
            str(q.run_id): q for q in QueuedRun.objects.filter(run_id__in=ids).select_related("run")
        }
        steps: dict[str, list[tuple[int, str]]] = {run_id: [] for run_id in ids}
        rows = RunEvent.objects.filter(run_id__in=ids).values_list("run_id", "seq", "name")
        for run_id, seq, name in rows:
            steps[str(run_id)].append((seq, name))
    for run_id in ids:
        item = queued[run_id]
        if item.state != "succeeded" or item.run.status != "succeeded":
            report.lost.append(run_id)
            continue
        report.resumed += item.attempts > 1
        recorded = sorted(steps[run_id])
        names = Counter(name for _, name in recorded)
        if [seq for seq, _ in recorded] != list(range(1, len(recorded) + 1)) or names != EXPECTED:
            report.repeated[run_id] = ", ".join(f"{n}×{c}" for n, c in sorted(names.items()))
            continue
        (tool_seq,) = [seq for seq, name in recorded if name == "http_get"]
        keys = server.keys_of(run_id)
        if list(keys) != [f"{run_id}:{tool_seq}"]:
            report.double_keys[run_id] = sorted(keys)
        report.resent += sum(n - 1 for n in keys.values())
    return report
