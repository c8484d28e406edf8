"""Running a claimed queued run: its snapshot's runtime, the turn pipeline, a lease heartbeat."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.utils import timezone
from django_tenants.utils import schema_context

from cadence_site.errors import ApplicationError
from engine.durable import services

logger = logging.getLogger(__name__)
HEARTBEAT_SECONDS = services.LEASE.total_seconds() / 3


def snapshot_runtime_config(schema_name: str, org_slug: str, run: Any, orchestrator_id: Any):
    """The RuntimeConfig of a run's snapshot (the key comes from the LLM configuration row it
    names; the rest from the snapshot), and the orchestrator it belongs to."""
    from orchestrators.models import LLMConfig, OrchestratorInstance
    from orchestrators.services import runtime_config

    with schema_context(schema_name):
        definition = run.snapshot.value
        instance = OrchestratorInstance.objects.filter(pk=orchestrator_id).first()
        if instance is None:
            raise ApplicationError(
                "The orchestrator was deleted.", "orchestrator_not_found", status=404
            )
        if (definition["plugins"].get("lock") or {}) != (instance.plugin_lock or {}):
            raise ApplicationError(
                "The run's definition used other plugin versions than the orchestrator now has.",
                "snapshot_unavailable",
            )
        llm_def = definition["llm"] or {}
        llm = LLMConfig.objects.filter(pk=llm_def.get("config_id")).first()
        if llm is None:
            raise ApplicationError(
                "The run's LLM configuration was deleted.", "snapshot_unavailable"
            )
        for name in (
            "provider",
            "base_url",
            "model",
            "temperature",
            "max_tokens",
            "timeout_seconds",
            "max_retries",
        ):
            setattr(llm, name, llm_def.get(name))
        instance.llm_config = llm
        instance.framework = definition["framework"]
        instance.flow = definition["flow"]
        instance.system_prompt = definition["system_prompt"]
        instance.tools = [t["name"] for t in definition["tools"]]
        instance.max_steps = definition["max_steps"]
        return runtime_config(instance, org_slug=org_slug), instance


def _runtime_from_snapshot(schema_name: str, org_slug: str, queued: Any):
    """A runtime built from the run's snapshot, when the orchestrator has changed since."""
    from orchestrators.adapters import adapter_for
    from orchestrators.pool import Acquired

    run = queued.run
    config, instance = snapshot_runtime_config(schema_name, org_slug, run, queued.orchestrator_id)
    runtime = adapter_for(config.framework).build(config)
    return Acquired(
        runtime, str(instance.id), instance.slug, run.config_hash, instance.version, run.snapshot_id
    )


async def _acquire(schema_name: str, org_slug: str, queued: Any):
    from orchestrators.pool import pool

    acquired = await pool.acquire(
        schema_name=schema_name, org_slug=org_slug, ref=str(queued.orchestrator_id)
    )
    if acquired.snapshot == queued.run.snapshot_id:
        return acquired
    return await sync_to_async(_runtime_from_snapshot, thread_sensitive=True)(
        schema_name, org_slug, queued
    )


async def queued_run_execute(*, schema_name: str, org_slug: str, queued: Any):
    """One attempt; returns the turn's outcome (never raises for a failed turn)."""
    from engine.durable.checkpoints import DatabaseCheckpointStore
    from engine.runs.pipeline import TurnOutcome, TurnRequest, turn_run

    run_id = str(queued.run_id)

    def renew() -> bool:
        with schema_context(schema_name):
            return services.lease_renew(run_id=run_id)

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            await sync_to_async(renew, thread_sensitive=False)()

    beat = asyncio.create_task(heartbeat())
    try:
        try:
            acquired = await _acquire(schema_name, org_slug, queued)
        except ApplicationError as exc:
            return TurnOutcome(run_id=run_id, status="failed", error=exc)
        turn = asyncio.ensure_future(
            turn_run(
                TurnRequest(
                    schema_name=schema_name,
                    org_slug=org_slug,
                    ref=str(queued.orchestrator_id),
                    message=queued.message,
                    history=[],
                    trigger="queue",
                    principal=queued.run.principal,
                    run_id=run_id,
                    acquired=acquired,
                    # Saved after each measure; an attempt after a crash resumes from the last one.
                    checkpoints=DatabaseCheckpointStore(schema_name),
                )
            )
        )
        if queued.deadline is None:
            return await turn
        left = (queued.deadline - timezone.now()).total_seconds()
        done, _ = await asyncio.wait({turn}, timeout=max(left, 0))
        if done:
            return turn.result()
        turn.cancel()  # the turn ends cancelled and is recorded so (engine/runs/pipeline.py)
        outcome = await turn
        outcome.status = "failed"
        outcome.error = ApplicationError(
            "The run's deadline passed while it ran; it was cancelled.",
            "deadline_exceeded",
            status=504,
        )
        return outcome
    finally:
        beat.cancel()
