"""ASGI lifespan: what each server process starts with and stops with.

Start: the orchestrator lifecycle listener and the hot orchestrators (orchestrators/pool.py).
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
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                stop_process_services()
                await sync_to_async(_stop_telemetry, thread_sensitive=False)()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _stop_telemetry() -> None:
    """Queued traces sent; this process's live gauges out of /metrics' sum (multiprocess mode)."""
    from cadence_site.metrics import mark_process_dead
    from engine.runs import traces

    try:
        traces.flush(timeout=5.0)
        mark_process_dead()
    except Exception:
        logger.exception("stopping telemetry failed")
