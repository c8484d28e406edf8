"""Real Celery worker processes killed with SIGKILL at random points while they run many queued
runs: no run is lost, no completed step runs again, and no tool call goes out under two keys.

acks_late and reject_on_worker_lost put a killed worker's message back; the run it held is found
by its expired lease (orphans_sweep, beat's job, called here) and claimed by exactly one worker,
which resumes it from its last checkpoint under its snapshot. CADENCE_CRASH_RUNS and
CADENCE_CRASH_KILLS change the size (benchmarks/durable.py --crash N runs 200 with the report).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pytest
from django_tenants.utils import schema_context

from cadence_site.testing import test_database_url
from engine.durable import services
from engine.durable.tests.crash_harness import crash_run, worker_env
from engine.durable.tests.toolserver import ToolServer
from engine.trust.models import ExecutionProof

# 40 runs and 4 kills: 12.5 s alone (2026-12-06, load 4.4), 37-59 s inside a full run on 3
# pytest-xdist workers (load 7-13). Until the workers had node names of their own
# (cadence_site.testing.celery_worker_argv) the second one died at start-up and the same runs
# took 72 s (load 1-2) to 102 s (load 6-7) on one worker. 200 runs (benchmarks/durable.py
# --crash 200) took about 160 s then.
RUNS = int(os.environ.get("CADENCE_CRASH_RUNS", "40"))
KILLS = int(os.environ.get("CADENCE_CRASH_KILLS", "4"))


@pytest.mark.slow
def test_sigkills_at_random_points_lose_no_run_and_repeat_no_step(
    tool_orchestrator, settings, monkeypatch
):
    from engine.trust.signing import keyring

    settings.CADENCE_SIGNING_KEYS = keyring().current.serialize()
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    settings.CADENCE_ORG_QUEUES = {"alpha": queue}
    monkeypatch.setattr(services, "LEASE", dt.timedelta(seconds=2))  # the workers' lease too
    instance = tool_orchestrator("cadence-offline@5ms")
    env = worker_env(database_url=test_database_url(), CADENCE_ORG_QUEUES=f"alpha={queue}")
    try:
        with ToolServer(delay=0.02) as server:
            report = crash_run(
                instance=instance, server=server, queue=queue, runs=RUNS, kills=KILLS, env=env,
                limit=240,
            )  # fmt: skip
    finally:
        client = services._redis()
        keys = list(client.scan_iter(match=f"cadence:runq:{queue}:*"))
        if keys:
            client.delete(*keys)
    print(report.summary())  # noqa: T201 - the figures, with -s
    assert report.kills == KILLS
    assert report.lost == []  # no run lost
    assert report.repeated == {}  # no completed step ran again
    assert report.double_keys == {}  # every tool call under one key, its step's
    assert report.resumed >= 1  # some run was cut short and resumed
    with schema_context("org_alpha"):
        proven = ExecutionProof.objects.filter(run_id__in=report.ids).count()
    assert proven == RUNS
