"""Telling every process that an orchestrator changed.

After a build commits, `announce` sets the instance's version key in Redis and publishes an event:
on a RabbitMQ fanout exchange when CADENCE_RABBITMQ_URL is set, on Redis pub/sub otherwise. Every
ASGI process and worker runs a `Listener` that hands events to its pool, and the announcing
process hands the event to its own pool at once (`local_handlers`). The version key is the
safety net: the pool compares it before a use unless it compared it less than
orchestrators.pool.CHECK_SECONDS ago, its listener has stayed connected since and no event came
meanwhile; so a missed message cannot leave a stale runtime for longer than that.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from functools import lru_cache

import redis
from django.conf import settings

from cadence_site.loops import LoopLocal

logger = logging.getLogger(__name__)

REBUILD = "rebuild"
DROP = "drop"
EXCHANGE = "cadence.lifecycle"
REDIS_CHANNEL = "cadence:lifecycle"


# This process's own handlers of its announcements (the pool's `apply`): a change is seen here
# without waiting for the transport to bring the event back.
local_handlers: list[Callable[[dict], None]] = []


def version_key(schema_name: str, instance_id: str) -> str:
    return f"cadence:orch:version:{schema_name}:{instance_id}"


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def transport() -> str:
    return "rabbitmq" if settings.CADENCE_RABBITMQ_URL else "redis"


def announce(*, schema_name: str, instance_id: str, config_hash: str, action: str) -> bool:
    """Set the version key and publish the event; False (and a warning) if no transport took it."""
    event = {
        "schema": schema_name,
        "id": instance_id,
        "hash": config_hash,
        "action": action,
        "ts": time.time(),
    }
    delivered = False
    try:
        key = version_key(schema_name, instance_id)
        if action == DROP:
            _redis().set(key, "dropped", ex=7 * 24 * 3600)
        else:
            _redis().set(key, config_hash)
    except redis.RedisError as exc:
        logger.warning("could not set orchestrator version key", extra={"error": str(exc)})
    for handle in list(local_handlers):
        try:
            handle(event)
        except Exception:
            logger.exception("lifecycle event handler failed", extra={"event": event})
    try:
        if settings.CADENCE_RABBITMQ_URL:
            _publish_rabbitmq(event)
        else:
            _redis().publish(REDIS_CHANNEL, json.dumps(event))
        delivered = True
    except Exception as exc:  # a broker outage must not fail the build that already committed
        logger.warning(
            "lifecycle event not published; processes will notice through the version key",
            extra={"transport": transport(), "error": str(exc)},
        )
    return delivered


def _exchange():
    from kombu import Exchange

    return Exchange(EXCHANGE, type="fanout", durable=False, auto_delete=False)


def _publish_rabbitmq(event: dict) -> None:
    from kombu import Connection

    with Connection(settings.CADENCE_RABBITMQ_URL, connect_timeout=2) as conn:
        producer = conn.Producer(serializer="json")
        producer.publish(
            event,
            exchange=_exchange(),
            routing_key="",
            declare=[_exchange()],
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.1},
        )


def current_version(schema_name: str, instance_id: str) -> str | None:
    """The instance's current configuration hash: its Redis version key, or, with Redis away,
    the database's (one query instead of a GET: slower, never wrong, never a 500)."""
    try:
        raw = _redis().get(version_key(schema_name, instance_id))
    except (redis.RedisError, OSError) as exc:
        _warn_redis_down(exc)
        return _database_version(schema_name, instance_id)
    return raw.decode() if raw else None


# One asyncio client per event loop and URL (redis.asyncio connections belong to their loop).
_async_clients: LoopLocal[dict] = LoopLocal(dict)


def _async_redis():
    from cadence_site.aredis import async_redis

    clients = _async_clients.get()
    client = clients.get(settings.REDIS_URL)
    if client is None:
        client = clients[settings.REDIS_URL] = async_redis(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
    return client


async def acurrent_version(schema_name: str, instance_id: str) -> str | None:
    """`current_version` from async code: one GET on the loop's pooled client, where the sync
    version opens a client (and a connection) in a thread on every call."""
    try:
        raw = await _async_redis().get(version_key(schema_name, instance_id))
    except (redis.RedisError, OSError) as exc:
        _warn_redis_down(exc)
        from asgiref.sync import sync_to_async

        return await sync_to_async(_database_version, thread_sensitive=False)(
            schema_name, instance_id
        )
    return raw.decode() if raw else None


_last_redis_warning = 0.0


def _warn_redis_down(exc: Exception) -> None:
    global _last_redis_warning
    now = time.monotonic()
    if now - _last_redis_warning > 60:
        _last_redis_warning = now
        logger.warning(
            "redis unavailable: runtime versions read from the database",
            extra={"error": type(exc).__name__},
        )


def _database_version(schema_name: str, instance_id: str) -> str | None:
    from django_tenants.utils import schema_context

    from orchestrators.models import OrchestratorInstance

    with schema_context(schema_name):
        row = (
            OrchestratorInstance.objects.filter(pk=instance_id)
            .values_list("status", "config_hash")
            .first()
        )
    if row is None or row[0] != OrchestratorInstance.Status.READY:
        return None
    return row[1]


def transport_status() -> dict:
    """For /readyz: whether lifecycle events can travel, with a warning when they cannot."""
    try:
        if settings.CADENCE_RABBITMQ_URL:
            from kombu import Connection

            with Connection(settings.CADENCE_RABBITMQ_URL, connect_timeout=1) as conn:
                conn.ensure_connection(max_retries=1, timeout=1)
            return {"status": "ok", "transport": "rabbitmq"}
        _redis().ping()
        return {
            "status": "ok",
            "transport": "redis",
            "warning": "CADENCE_RABBITMQ_URL is not set: lifecycle events use Redis pub/sub.",
        }
    except Exception as exc:
        return {
            "status": "down",
            "transport": transport(),
            "warning": f"lifecycle events cannot be delivered ({type(exc).__name__}); processes rely on version keys",
        }


class Listener(threading.Thread):
    """Receives lifecycle events in a daemon thread and hands them to `handle`, reconnecting forever."""

    def __init__(self, handle: Callable[[dict], None]) -> None:
        super().__init__(name="cadence-lifecycle", daemon=True)
        self.handle = handle
        self.stopping = threading.Event()
        self.ready = threading.Event()
        # Connections made so far: what came while it was not connected is lost to it, and the
        # pool reads version keys again after a reconnect (a new generation).
        self.generation = 0

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        delay = 0.5
        while not self.stopping.is_set():
            try:
                if settings.CADENCE_RABBITMQ_URL:
                    self._run_rabbitmq()
                else:
                    self._run_redis()
                delay = 0.5
            except Exception as exc:
                self.ready.clear()
                logger.warning(
                    "lifecycle listener disconnected; retrying",
                    extra={"transport": transport(), "error": str(exc)},
                )
                self.stopping.wait(delay)
                delay = min(delay * 2, 10)

    def _dispatch(self, event: dict) -> None:
        try:
            self.handle(event)
        except Exception:
            logger.exception("lifecycle event handler failed", extra={"event": event})

    def _run_redis(self) -> None:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=2, health_check_interval=10
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(REDIS_CHANNEL)
        self.generation += 1
        self.ready.set()
        try:
            while not self.stopping.is_set():
                message = pubsub.get_message(timeout=0.5)
                if message and message.get("type") == "message":
                    self._dispatch(json.loads(message["data"]))
        finally:
            pubsub.close()
            client.close()

    def _run_rabbitmq(self) -> None:
        from kombu import Connection, Queue

        with Connection(settings.CADENCE_RABBITMQ_URL, connect_timeout=2, heartbeat=10) as conn:
            # One exclusive, auto-deleted queue per process: a fanout gives each its own copy.
            queue = Queue(exchange=_exchange(), exclusive=True, auto_delete=True, durable=False)

            def on_message(body, message):
                message.ack()
                self._dispatch(body if isinstance(body, dict) else json.loads(body))

            with conn.Consumer(queue, callbacks=[on_message], accept=["json"]):
                self.generation += 1
                self.ready.set()
                while not self.stopping.is_set():
                    try:
                        conn.drain_events(timeout=0.5)
                    except TimeoutError:
                        conn.heartbeat_check()
