"""Redis cache that degrades instead of failing when Redis is away.

Sessions are cached_db and rate limits, tickets and lookups are caches: losing Redis must slow
Cadence down, not take it offline. Reads miss, writes are dropped, and the failure is logged once
per minute rather than per call.
"""

from __future__ import annotations

import logging
import time

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_last_warning = 0.0


def _warn(exc: Exception) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning > 60:
        _last_warning = now
        logger.warning("redis unavailable, cache degraded", extra={"error": str(exc)})


class SharedPoolClient(RedisCacheClient):
    """Connection pools shared by every cache object in the process.

    Under ASGI, Django builds a cache object per request context, and each would open its own
    pool: a fresh Redis connection on every request. Pools are keyed by server and options.
    """

    _shared: dict[tuple, object] = {}
    _clients: dict[object, object] = {}  # pool → its client

    def get_client(self, key=None, *, write=False):
        # Django builds a redis.Redis per cache call, and building one (its response callbacks,
        # ~170 entries) cost more CPU than the call's round trip: two per API request (the
        # organization and the session). A client is thread-safe and holds no connection of
        # its own, so one per shared pool serves every call.
        pool = self._get_connection_pool(write)
        client = self._clients.get(pool)
        if client is None:
            client = self._clients.setdefault(pool, self._client(connection_pool=pool))
        return client

    def _get_connection_pool(self, write):
        index = self._get_connection_pool_index(write)
        key = (self._servers[index], repr(sorted(self._pool_options.items())))
        pool = self._shared.get(key)
        if pool is None:
            pool = self._shared.setdefault(
                key, self._pool_class.from_url(self._servers[index], **self._pool_options)
            )
        return pool


class ResilientRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = SharedPoolClient

    def get(self, key, default=None, version=None):
        try:
            return super().get(key, default, version)
        except _UNAVAILABLE as exc:
            _warn(exc)
            return default

    def get_many(self, keys, version=None):
        try:
            return super().get_many(keys, version)
        except _UNAVAILABLE as exc:
            _warn(exc)
            return {}

    def set(self, key, value, timeout=..., version=None):
        timeout = self.default_timeout if timeout is ... else timeout
        try:
            return super().set(key, value, timeout, version)
        except _UNAVAILABLE as exc:
            _warn(exc)

    def add(self, key, value, timeout=..., version=None):
        timeout = self.default_timeout if timeout is ... else timeout
        try:
            return super().add(key, value, timeout, version)
        except _UNAVAILABLE as exc:
            _warn(exc)
            return False

    def delete(self, key, version=None):
        try:
            return super().delete(key, version)
        except _UNAVAILABLE as exc:
            _warn(exc)
            return False

    def delete_many(self, keys, version=None):
        try:
            return super().delete_many(keys, version)
        except _UNAVAILABLE as exc:
            _warn(exc)

    def has_key(self, key, version=None):
        # Sessions (cached_db) ask this on every login: a miss sends them to the database.
        try:
            return super().has_key(key, version)
        except _UNAVAILABLE as exc:
            _warn(exc)
            return False

    def touch(self, key, timeout=..., version=None):
        timeout = self.default_timeout if timeout is ... else timeout
        try:
            return super().touch(key, timeout, version)
        except _UNAVAILABLE as exc:
            _warn(exc)
            return False

    def set_many(self, data, timeout=..., version=None):
        timeout = self.default_timeout if timeout is ... else timeout
        try:
            return super().set_many(data, timeout, version)
        except _UNAVAILABLE as exc:
            _warn(exc)
            return list(data)
