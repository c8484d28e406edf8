"""ASGI lifespan: what each server process starts with and stops with.

Start: the orchestrator lifecycle listener and the hot orchestrators (orchestrators/pool.py), the
access watch (tenants/access_watch.py: API keys resolved once, kept while no access row changes),
and the orphan sweep (engine/runs/orphans.py): replies and runs a dead process left in flight (this
host's previous server, killed) are ended before the first request, not at the next beat.
Channels' router has no lifespan of its own, so this wraps it.
"""

from __future__ import annotations

import gc
import logging

from asgiref.sync import sync_to_async

logger = logging.getLogger(__name__)


class Lifespan:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        from engine.runs import live
        from orchestrators.pool import start_process_services, stop_process_services
        from tenants import access_watch

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await sync_to_async(start_process_services, thread_sensitive=True)()
                except Exception as exc:
                    logger.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await sync_to_async(_sweep_orphans, thread_sensitive=True)()
                access_watch.start()
                live.serve_lasting()  # runs' ends published off the turn (engine/runs/live.py)
                _tune_collector()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if not await live.drain():
                    logger.warning("runs' last frames not all published at shutdown")
                stop_process_services()
                await sync_to_async(access_watch.stop, thread_sensitive=False)()
                await sync_to_async(_stop_telemetry, thread_sensitive=False)()
                await send({"type": "lifespan.shutdown.complete"})
                return


# The cyclic collector's thresholds for a serving process (Python's: 700, 10, 10). Runs in
# flight hold many young objects that live for the run (its steps, their data), so at the
# defaults every tenth young collection promoted them and a full collection followed about
# every tenth of those: at 50 watched runs (benchmarks/run_ingest.py) 16-18 full collections a
# round of ~30 s, ~9% of the server's CPU, each blocking the event loop for 0.1-0.15 s.
# Reference counting frees everything not in a cycle at once whatever these are; cycles wait
# for a collection a little longer.
GC_THRESHOLDS = (10_000, 10, 100)


def _tune_collector() -> None:
    """What the process built to start (Django, the apps, the hot orchestrators' runtimes) is
    moved out of the collector's generations (a full collection walks only what serving made
    since), and collections come less often (GC_THRESHOLDS)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _sweep_orphans() -> None:
    from django.db import close_old_connections

    from engine.runs.orphans import orphans_sweep

    try:
        orphans_sweep()
    except Exception:  # beat sweeps again; a server that cannot sweep now still serves
        logger.exception("the start-up orphan sweep failed")
    finally:
        close_old_connections()


def _stop_telemetry() -> None:
    """Queued traces sent; this process's live gauges out of /metrics' sum (multiprocess mode)."""
    from cadence_site.metrics import mark_process_dead
    from engine.runs import traces

    try:
        traces.flush(timeout=5.0)
        mark_process_dead()
    except Exception:
        logger.exception("stopping telemetry failed")
