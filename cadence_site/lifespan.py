"""ASGI lifespan: what each server process starts with and stops with.

Start: the orchestrator lifecycle listener and the hot orchestrators (orchestrators/pool.py), and
the orphan sweep (engine/runs/orphans.py): replies and runs a dead process left in flight (this
host's previous server, killed) are ended before the first request, not at the next beat.
Channels' router has no lifespan of its own, so this wraps it.
"""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async

logger = logging.getLogger(__name__)


class Lifespan:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        from orchestrators.pool import start_process_services, stop_process_services

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
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                stop_process_services()
                await sync_to_async(_stop_telemetry, thread_sensitive=False)()
                await send({"type": "lifespan.shutdown.complete"})
                return


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
