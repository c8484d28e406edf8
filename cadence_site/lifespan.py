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
                await send({"type": "lifespan.shutdown.complete"})
                return
