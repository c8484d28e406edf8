"""Per-organization request budgets: a fixed one-minute window counted in Redis.

A fixed window costs one round trip per request (INCR and EXPIRE in a pipeline) and one key per
organization per minute; its known weakness, up to twice the budget across a window edge, is an
acceptable price for a plan limit that protects capacity rather than bills anyone.

Buckets are keyed by the organization's public id (a UUID): unique across every database that
shares the Redis server, unlike the integer primary key.

Redis being away must not take the API down: the limiter then lets requests through (degrades
open), logs a warning at most once a minute, and leaves Redis alone for a few seconds so that a
dead server does not add a connect timeout to every request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from django.conf import settings

from cadence_site.aredis import async_redis, sync_redis

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
_TIMEOUT = 0.5  # seconds; a limiter that waits longer than this costs more than it protects
_BACKOFF_SECONDS = 5.0
_WARN_EVERY_SECONDS = 60.0

_down_until = 0.0
_last_warning = 0.0
# redis.asyncio connections belong to the loop that opened them: one client per loop and URL.
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aioredis.Redis]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # whole seconds until the window resets; 0 when allowed
    degraded: bool = False  # Redis was unavailable and the request was let through


def bucket_key(org_public_id: str, window: int) -> str:
    return f"cadence:ratelimit:org:{org_public_id}:{window}"


def _decide(count: int, limit: int, now: float, window: int) -> Decision:
    if count <= limit:
        return Decision(True, limit, limit - count, 0)
    reset_at = (window + 1) * WINDOW_SECONDS
    return Decision(False, limit, 0, max(1, math.ceil(reset_at - now)))


def _open(limit: int) -> Decision:
    return Decision(True, limit, limit, 0, degraded=True)


def _skipping() -> bool:
    return time.monotonic() < _down_until


def _failed(exc: Exception) -> None:
    global _down_until, _last_warning
    now = time.monotonic()
    _down_until = now + _BACKOFF_SECONDS
    if now - _last_warning >= _WARN_EVERY_SECONDS:
        _last_warning = now
        logger.warning(
            "redis unavailable, rate limits not enforced",
            extra={"error": f"{type(exc).__name__}: {exc}"},
        )


def reset_backoff() -> None:
    """Forget a recent Redis failure (tests; an operator who just brought Redis back)."""
    global _down_until, _last_warning
    _down_until = _last_warning = 0.0


def _sync_client() -> redis.Redis:
    return sync_redis(settings.REDIS_URL, _TIMEOUT)


def _async_client() -> aioredis.Redis:
    url = settings.REDIS_URL
    per_loop = _async_clients.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get(url)
    if client is None:
        client = per_loop[url] = async_redis(
            url, socket_timeout=_TIMEOUT, socket_connect_timeout=_TIMEOUT
        )
    return client


def hit(*, org_public_id: str, limit: int, now: float | None = None) -> Decision:
    """Count one request against the organization's budget (synchronous callers)."""
    if _skipping():
        return _open(limit)
    now = time.time() if now is None else now
    window = int(now // WINDOW_SECONDS)
    key = bucket_key(org_public_id, window)
    try:
        pipe = _sync_client().pipeline(transaction=False)
        pipe.incr(key)
        # A little past the window's end, so a slow clock on another process still finds it.
        pipe.expire(key, WINDOW_SECONDS + 5)
        count = int(pipe.execute()[0])
    except (redis.RedisError, OSError) as exc:
        _failed(exc)
        return _open(limit)
    return _decide(count, limit, now, window)


async def ahit(*, org_public_id: str, limit: int, now: float | None = None) -> Decision:
    """Count one request against the organization's budget (async callers, no thread hop)."""
    if _skipping():
        return _open(limit)
    now = time.time() if now is None else now
    window = int(now // WINDOW_SECONDS)
    key = bucket_key(org_public_id, window)
    try:
        async with _async_client().pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS + 5)
            count = int((await pipe.execute())[0])
    except (redis.RedisError, OSError, TimeoutError) as exc:
        _failed(exc)
        return _open(limit)
    return _decide(count, limit, now, window)


def clear(*, org_public_id: str, now: float | None = None) -> None:
    """Drop the current window's count for an organization (tests, an operator's reset)."""
    now = time.time() if now is None else now
    window = int(now // WINDOW_SECONDS)
    try:
        _sync_client().delete(
            bucket_key(org_public_id, window), bucket_key(org_public_id, window - 1)
        )
    except (redis.RedisError, OSError) as exc:
        _failed(exc)
