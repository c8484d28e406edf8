"""A real Celery worker process killed with SIGKILL mid-run: another worker finishes every run.

acks_late + reject_on_worker_lost put the killed worker's message back; the run it held is found
by its expired lease and claimed by exactly one worker, which runs it again under its snapshot.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django_tenants.utils import schema_context

from cadence_site.testing import test_database_url
from engine.durable import services
from engine.durable.models import QueuedRun
from engine.models import Run
from engine.trust.models import ExecutionProof

REPO = Path(__file__).resolve().parents[3]
RUNS = 12


def _worker(queue: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CADENCE_TESTING": "1",
        "CADENCE_RUN_LEASE_SECONDS": "2",
        "CADENCE_ORG_QUEUES": f"alpha={queue}",
        "CADENCE_SIGNING_KEYS": settings.CADENCE_SIGNING_KEYS,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cadence_site", "worker", "-Q", queue,
         "--pool", "solo", "-c", "1", "--without-heartbeat", "--without-gossip",
         "--without-mingle", "-l", "WARNING"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _states(ids):
    with schema_context("org_alpha"):
        return dict(QueuedRun.objects.filter(run_id__in=ids).values_list("run_id", "state"))


@pytest.mark.slow
def test_sigkill_mid_run_loses_no_run_and_records_each_once(chat_orchestrator, settings):
    from engine.trust.signing import keyring

    settings.CADENCE_SIGNING_KEYS = keyring().current.serialize()
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    settings.CADENCE_ORG_QUEUES = {"alpha": queue}
    ids = []
    with schema_context("org_alpha"):
        for _ in range(RUNS):
            queued, _ = services.queued_run_enqueue(
                instance=chat_orchestrator["slow"], message="count to three",
                idempotency_key=uuid.uuid4().hex,
            )  # fmt: skip
            ids.append(queued.run_id)
    first = _worker(queue)
    killed_holding = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = _states(ids)
            if (
                list(states.values()).count("succeeded") >= random.randint(1, 4)
                and "running" in states.values()
            ):
                killed_holding = [k for k, v in states.items() if v == "running"]
                first.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        first.wait(timeout=10)
        assert killed_holding, "the worker was never caught mid-run"
        second = _worker(queue)
        try:
            from engine.durable.tasks import orphans_sweep

            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                states = _states(ids)
                if all(v == "succeeded" for v in states.values()):
                    break
                orphans_sweep()  # beat's job: the killed run's lease expires after 2 s
                time.sleep(1)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    states = _states(ids)
    assert list(states.values()) == ["succeeded"] * RUNS  # no run lost
    with schema_context("org_alpha"):
        for run_id in ids:
            run = Run.objects.get(pk=run_id)
            seqs = list(run.events.order_by("seq").values_list("seq", flat=True))
            assert seqs == list(range(1, len(seqs) + 1))  # one recording per run, no duplicates
            assert run.status == "succeeded"
            assert ExecutionProof.objects.filter(run_id=run_id).count() == 1
        resumed = QueuedRun.objects.filter(run_id__in=killed_holding).values_list(
            "attempts", flat=True
        )
        assert list(resumed) == [2] * len(killed_holding)  # the killed run ran again, once
