"""A queued run whose worker is killed (SIGKILL) resumes from its last checkpoint on the next
worker: the steps its checkpoints covered are kept and not run again, and a tool step cut short
is sent again with the same `Idempotency-Key: <run id>:<step seq>`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from django_tenants.utils import schema_context

from cadence_site.testing import test_database_url
from engine.durable import services
from engine.durable.models import QueuedRun, RunCheckpoint
from engine.durable.tasks import run_one
from engine.durable.tests.conftest import tool_message
from engine.durable.tests.crash_harness import worker_env
from engine.durable.tests.toolserver import ToolServer
from engine.models import Run
from engine.trust import signing
from engine.trust.bundle import bundle_build
from engine.trust.models import ExecutionProof
from engine.trust.verify_bundle import verify_bundle

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def _worker(run_id: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.durable.tests.resume_worker", "org_alpha", run_id],
        cwd=REPO,
        env=worker_env(database_url=test_database_url(), CADENCE_RUN_LEASE_SECONDS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _enqueue(instance, message: str) -> str:
    with schema_context("org_alpha"):
        queued, _ = services.queued_run_enqueue(
            instance=instance, message=message, idempotency_key=uuid.uuid4().hex
        )
    return str(queued.run_id)


def _kill(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)


def _until(check, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _steps(run_id: str) -> list[tuple[int, str]]:
    with schema_context("org_alpha"):
        return list(Run.objects.get(pk=run_id).events.order_by("seq").values_list("seq", "name"))


def _checkpoint(run_id: str) -> RunCheckpoint | None:
    with schema_context("org_alpha"):
        return RunCheckpoint.objects.filter(run_id=run_id).first()


def _check_finished(run_id: str, server: ToolServer) -> dict[str, int]:
    steps = _steps(run_id)
    names = [name for _, name in steps]
    assert [seq for seq, _ in steps] == list(range(1, len(steps) + 1))
    # every measure once, the tool once: nothing completed ran again
    assert names.count("prepare_prompt") == 1 and names.count("finalize") == 1
    assert names.count("agent") == 2 and names.count("http_get") == 1
    assert names.count("llm_call") == 3 and names[-1] == "run"
    (tool_seq,) = [seq for seq, name in steps if name == "http_get"]
    keys = server.keys_of(run_id)
    assert list(keys) == [f"{run_id}:{tool_seq}"]  # one key, the recorded step's
    with schema_context("org_alpha"):
        queued = QueuedRun.objects.select_related("run").get(pk=run_id)
        assert (queued.state, queued.run.status, queued.attempts) == ("succeeded", "succeeded", 2)
        assert queued.run.output.startswith("The http_get tool returned: ")
        assert not RunCheckpoint.objects.filter(run_id=run_id).exists()
        bundle = bundle_build(run=queued.run, proof=ExecutionProof.objects.get(run_id=run_id))
    assert verify_bundle(bundle, signing.keyring().verifiers).failures == []
    return keys


def test_a_worker_killed_in_a_tool_call_resumes_and_resends_the_call_with_its_key(
    tool_orchestrator, queue_name, settings
):
    settings.CADENCE_SIGNING_KEYS = signing.keyring().current.serialize()
    instance = tool_orchestrator()
    with ToolServer(hold_first=True) as server:
        run_id = _enqueue(instance, tool_message(server.url))
        worker = _worker(run_id)
        try:
            assert server.seen.wait(30), "the tool was never called"
        finally:
            _kill(worker)
        server.release()
        # The checkpoint after the first measure and its step survived the kill.
        checkpoint = _checkpoint(run_id)
        assert (checkpoint.measure_index, checkpoint.measure_name) == (0, "prepare_prompt")
        assert _steps(run_id) == [(1, "prepare_prompt")]
        time.sleep(1.1)  # the killed worker's lease (1 s) expires
        assert run_one(schema_name="org_alpha", run_id=run_id) == "succeeded"
        keys = _check_finished(run_id, server)
    assert list(keys.values()) == [2]  # the step cut short was sent again, with the same key


def test_a_worker_killed_after_the_tool_measure_does_not_call_the_tool_again(
    tool_orchestrator, queue_name, settings
):
    settings.CADENCE_SIGNING_KEYS = signing.keyring().current.serialize()
    instance = tool_orchestrator()
    with ToolServer() as server:
        run_id = _enqueue(instance, tool_message(server.url))
        worker = _worker(run_id)
        try:
            # killed while the third measure streams its reply (20 ms a word)
            _until(lambda: (c := _checkpoint(run_id)) is not None and c.measure_index == 1)
        finally:
            _kill(worker)
        kept = [name for _, name in _steps(run_id)]
        assert kept == ["prepare_prompt", "agent", "llm_call", "http_get", "llm_call"]
        time.sleep(1.1)
        assert run_one(schema_name="org_alpha", run_id=run_id) == "succeeded"
        keys = _check_finished(run_id, server)
    assert list(keys.values()) == [1]  # the tool's measure was not run again


def test_http_tools_send_the_steps_idempotency_key_and_none_without_one(settings):
    import asyncio

    from orchestrators.runtime import ToolContext
    from orchestrators.tools import http_get_tool
    from plugins.tooling import http_tool_call

    settings.CADENCE_EGRESS_ALLOW_PRIVATE = True
    with ToolServer() as server:
        plugin_tool = http_tool_call({"method": "GET", "url": server.url}, ["127.0.0.1"], {})
        keyed = ToolContext(org_slug="alpha", run_id="r1", idempotency_key="r1:4")
        assert asyncio.run(plugin_tool({}, keyed))["status"] == 200
        assert asyncio.run(http_get_tool.fn({"url": server.url}, keyed))["status"] == 200
        asyncio.run(http_get_tool.fn({"url": server.url}, ToolContext(org_slug="alpha")))
    assert dict(server.calls) == {"r1:4": 2, "": 1}
