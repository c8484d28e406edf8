"""Built runtimes per process: hot ones built at start-up, warm ones on first use (LRU), cold per call.

Entries are keyed by schema and instance and carry the configuration hash they were built from.
Every use compares that hash with the instance's version key in Redis (one GET), so a change made
in another process is picked up even if its lifecycle event was missed. Concurrent first calls for
one instance share a single build.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from cadence_site.errors import ApplicationError
from orchestrators import lifecycle

logger = logging.getLogger(__name__)


class OrchestratorUnavailable(ApplicationError):
    status_code = 409


# A pooled runtime is used without reading its version key again for this long after a read
# that found it current, while the lifecycle listener stays connected (the same generation) and
# no lifecycle event came: a GET per turn was 4% of a streamed /v1 request's server CPU. A missed
# event (a silent broker) leaves a stale runtime this long at most.
CHECK_SECONDS = 2.0


@dataclass(slots=True)
class Entry:
    runtime: Any
    config_hash: str
    tier: str
    slug: str
    version: int
    built_at: float
    snapshot: str = ""
    # When its version key last matched: (listener generation, pool events, monotonic time).
    checked: tuple[int, int, float] | None = None


@dataclass(frozen=True, slots=True)
class Acquired:
    runtime: Any
    instance_id: str
    slug: str
    config_hash: str
    version: int
    # The definition snapshot (engine/trust/snapshots.py) the runtime was built from.
    snapshot: str = ""


def _load(schema_name: str, org_slug: str, ref: str) -> tuple[Any, dict]:
    """Load and build in one synchronous call inside the tenant's schema (see tenants/context.py)."""
    from django_tenants.utils import schema_context

    from orchestrators.adapters import adapter_for
    from orchestrators.models import OrchestratorInstance
    from orchestrators.services import runtime_config

    with schema_context(schema_name):
        qs = OrchestratorInstance.objects.select_related("llm_config")
        instance = (
            qs.filter(slug=ref).first() if not _looks_like_uuid(ref) else qs.filter(pk=ref).first()
        )
        if instance is None:
            raise ApplicationError(
                f"No orchestrator {ref!r}.", "orchestrator_not_found", status=404
            )
        if instance.status != OrchestratorInstance.Status.READY:
            message = f"The orchestrator {instance.slug!r} is {instance.status}" + (
                f": {instance.status_message}" if instance.status_message else "."
            )
            raise OrchestratorUnavailable(
                message, f"orchestrator_{instance.status}", {"status": instance.status}
            )
        from engine.trust.snapshots import snapshot_for_orchestrator

        config = runtime_config(instance, org_slug=org_slug)
        info = {
            "snapshot": snapshot_for_orchestrator(instance=instance).hash,
            "id": str(instance.id),
            "slug": instance.slug,
            "tier": instance.tier,
            "hash": instance.config_hash,
            "version": instance.version,
        }
    runtime = adapter_for(config.framework).build(config)
    return runtime, info


def _load_closing(schema_name: str, org_slug: str, ref: str) -> tuple[Any, dict]:
    """_load with stale connections closed around it, unless a sync caller's transaction is
    open (as the turn pipeline's `_db`): it runs on the request's or consumer's thread-sensitive
    thread, which /v1 and the chat socket no longer sweep after each request or frame
    (cadence_site/handlers.py, chat/consumers.py), so the connection must not stay out of the
    pool there."""
    from django.db import close_old_connections, connection

    outside = not connection.in_atomic_block
    if outside:
        close_old_connections()
    try:
        return _load(schema_name, org_slug, ref)
    finally:
        if outside:
            close_old_connections()


def _looks_like_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


class RuntimePool:
    def __init__(self, warm_max: int) -> None:
        self.warm_max = warm_max
        self._entries: OrderedDict[tuple[str, str], Entry] = OrderedDict()
        self._slugs: dict[tuple[str, str], str] = {}
        self._building: dict[tuple[str, str], asyncio.Future] = {}
        self._lock = threading.Lock()  # lifecycle events arrive on another thread
        self.builds = 0
        self.events = 0  # lifecycle events applied (any instance's)
        self.listener: lifecycle.Listener | None = None

    # --- use ----------------------------------------------------------------------------------

    async def acquire(self, *, schema_name: str, org_slug: str, ref: str) -> Acquired:
        instance_id = ref if _looks_like_uuid(ref) else self._slugs.get((schema_name, ref))
        if instance_id is not None:
            key = (schema_name, instance_id)
            entry = self._entries.get(key)
            if entry is not None:
                stamp = self._stamp()  # before the read: an event during it counts against it
                if self._checked_lately(entry, stamp):
                    current = entry.config_hash
                else:
                    current = await lifecycle.acurrent_version(schema_name, instance_id)
                    if current == entry.config_hash and stamp is not None:
                        entry.checked = stamp
                if current == entry.config_hash:
                    with self._lock:
                        if key in self._entries:
                            self._entries.move_to_end(key)
                    return Acquired(
                        entry.runtime,
                        instance_id,
                        entry.slug,
                        entry.config_hash,
                        entry.version,
                        entry.snapshot,
                    )
                self.drop(schema_name, instance_id)
        return await self._build(schema_name, org_slug, ref)

    def _stamp(self) -> tuple[int, int, float] | None:
        """Now, as `Entry.checked` records it; None while no listener is connected."""
        listener = self.listener
        if listener is None or not listener.ready.is_set():
            return None
        return listener.generation, self.events, time.monotonic()

    @staticmethod
    def _checked_lately(entry: Entry, stamp: tuple[int, int, float] | None) -> bool:
        checked = entry.checked
        return (
            stamp is not None
            and checked is not None
            and checked[:2] == stamp[:2]
            and stamp[2] - checked[2] < CHECK_SECONDS
        )

    async def _build(self, schema_name: str, org_slug: str, ref: str) -> Acquired:
        build_key = (schema_name, ref)
        pending = self._building.get(build_key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._building[build_key] = future
        try:
            # Thread-sensitive: called from a sync view (through async_to_sync) it runs on the
            # request's own thread and connection; _load enters the schema itself either way.
            runtime, info = await sync_to_async(_load_closing, thread_sensitive=True)(
                schema_name, org_slug, ref
            )
            self.builds += 1
            acquired = Acquired(
                runtime, info["id"], info["slug"], info["hash"], info["version"], info["snapshot"]
            )
            if info["tier"] != "cold":
                self._store(schema_name, info, runtime)
            future.set_result(acquired)
            return acquired
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
            raise
        finally:
            self._building.pop(build_key, None)

    def _store(self, schema_name: str, info: dict, runtime: Any) -> None:
        key = (schema_name, info["id"])
        with self._lock:
            self._entries[key] = Entry(
                runtime,
                info["hash"],
                info["tier"],
                info["slug"],
                info["version"],
                time.monotonic(),
                info["snapshot"],
            )
            self._entries.move_to_end(key)
            self._slugs[(schema_name, info["slug"])] = info["id"]
            warm = [k for k, e in self._entries.items() if e.tier == "warm"]
            for stale in warm[: max(0, len(warm) - self.warm_max)]:
                self._entries.pop(stale, None)

    # --- lifecycle ----------------------------------------------------------------------------

    def drop(self, schema_name: str, instance_id: str) -> None:
        with self._lock:
            entry = self._entries.pop((schema_name, instance_id), None)
            if entry is not None:
                self._slugs.pop((schema_name, entry.slug), None)

    def apply(self, event: dict) -> None:
        """A lifecycle event from any process: drop what it makes stale (repeats are no-ops)."""
        with self._lock:
            self.events += 1  # every pooled runtime's version is read again before its next use
        key = (event.get("schema", ""), event.get("id", ""))
        entry = self._entries.get(key)
        if entry is None or (
            event.get("action") == lifecycle.REBUILD and entry.config_hash == event.get("hash")
        ):
            return
        self.drop(*key)
        logger.info(
            "orchestrator runtime dropped after lifecycle event",
            extra={"schema": key[0], "instance": key[1], "action": event.get("action")},
        )

    def size(self) -> dict[str, int]:
        tiers = [e.tier for e in self._entries.values()]
        return {"hot": tiers.count("hot"), "warm": tiers.count("warm")}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._slugs.clear()

    def preload_hot(self) -> int:
        """Build every ready hot instance of every active organization (start-up of a process).

        One query per organization; a failing instance is logged and left to build on first use.
        """
        from django_tenants.utils import schema_context

        from engine.trust.snapshots import snapshot_for_orchestrator
        from orchestrators.adapters import adapter_for
        from orchestrators.models import OrchestratorInstance
        from orchestrators.services import runtime_config
        from tenants.models import Organization

        started, count = time.perf_counter(), 0
        for org in Organization.objects.filter(status=Organization.Status.ACTIVE).only(
            "slug", "schema_name"
        ):
            with schema_context(org.schema_name):
                hot = list(
                    OrchestratorInstance.objects.filter(tier="hot", status="ready").select_related(
                        "llm_config"
                    )
                )
                configs = []
                for instance in hot:
                    try:
                        config = runtime_config(instance, org_slug=org.slug)
                        snapshot = snapshot_for_orchestrator(instance=instance).hash
                        configs.append((instance, config, snapshot))
                    except Exception as exc:
                        logger.warning(
                            "hot orchestrator not preloaded",
                            extra={"org": org.slug, "instance": instance.slug, "error": str(exc)},
                        )
            for instance, config, snapshot in configs:
                try:
                    runtime = adapter_for(config.framework).build(config)
                except Exception as exc:
                    logger.warning(
                        "hot orchestrator not preloaded",
                        extra={"org": org.slug, "instance": instance.slug, "error": str(exc)},
                    )
                    continue
                info = {
                    "id": str(instance.id),
                    "slug": instance.slug,
                    "tier": instance.tier,
                    "hash": instance.config_hash,
                    "version": instance.version,
                    "snapshot": snapshot,
                }
                self._store(org.schema_name, info, runtime)
                count += 1
        logger.info(
            "hot orchestrators preloaded",
            extra={"count": count, "seconds": round(time.perf_counter() - started, 3)},
        )
        return count


pool = RuntimePool(warm_max=getattr(settings, "CADENCE_POOL_WARM_MAX", 256))
_listener: lifecycle.Listener | None = None


def start_process_services(*, preload: bool = True) -> None:
    """Once per process (ASGI lifespan, Celery worker start): listen for lifecycle events, preload hot."""
    global _listener
    if _listener is None:
        _listener = lifecycle.Listener(pool.apply)
        _listener.start()
        pool.listener = _listener
        lifecycle.local_handlers.append(pool.apply)
    if preload:
        try:
            pool.preload_hot()
        except Exception:
            logger.exception("preloading hot orchestrators failed; they will be built on first use")


def stop_process_services() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
        pool.listener = None
        if pool.apply in lifecycle.local_handlers:
            lifecycle.local_handlers.remove(pool.apply)
