"""Async Redis clients whose commands can be cancelled.

On Python 3.11, `asyncio.wait_for` returns the inner result and drops a cancellation that arrives
as the inner operation completes (bpo-42130; 3.12 reimplemented wait_for on asyncio.timeout).
redis-py 8.1 wraps every socket write in wait_for whenever socket_timeout is set, and a write
usually completes at once, so a task cancelled while it sends a command tends to keep running:
140 of 200 cancels were lost (`benchmarks/redis_cancel.py`; 0 of 200 with these connections).
A chat turn the user cancelled kept streaming to the end because of it.

These connection classes write under `asyncio.timeout` instead, which re-raises the cancellation.
Every async Redis client in Cadence comes from `async_redis`.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache

import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class _CancellableWrites:
    async def send_packed_command(self, command, check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        try:
            async with asyncio.timeout(self.socket_timeout or None):
                self._writer.writelines(command)
                await self._writer.drain()
        except TimeoutError:  # before OSError: TimeoutError is one
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            # Cancelled mid-write: the connection may hold half a command; never reuse it.
            await self.disconnect(nowait=True)
            raise


class CancellableConnection(_CancellableWrites, Connection):
    """redis:// (TCP)."""


class CancellableSSLConnection(_CancellableWrites, SSLConnection):
    """rediss:// (TLS)."""


class CancellableUnixDomainSocketConnection(_CancellableWrites, UnixDomainSocketConnection):
    """unix:// (a Redis on a local socket)."""


_CANCELLABLE = {
    Connection: CancellableConnection,
    SSLConnection: CancellableSSLConnection,
    UnixDomainSocketConnection: CancellableUnixDomainSocketConnection,
}


def async_redis(url: str, *, blocking: bool = False, **options) -> aioredis.Redis:
    """`redis.asyncio.Redis.from_url(url, **options)` with cancellable connections.

    `blocking`: a bounded pool (`max_connections`) whose callers wait for a free connection
    instead of opening one each: hundreds of requests in flight then share a few sockets."""
    pool_class = aioredis.BlockingConnectionPool if blocking else aioredis.ConnectionPool
    pool = pool_class.from_url(url, **options)
    # The URL's scheme picks the class (redis://, rediss://, unix://); swap in its twin.
    pool.connection_class = _CANCELLABLE.get(pool.connection_class, pool.connection_class)
    return aioredis.Redis(connection_pool=pool)


@lru_cache(maxsize=32)
def sync_redis(url: str, timeout: float) -> redis.Redis:
    """A shared synchronous client for `url` whose connects and reads give up after `timeout` s
    (blocking clients have no cancellation problem; one per URL and timeout, thread-safe pool)."""
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


async def lost_cancellations(client: aioredis.Redis, trials: int = 200) -> int:
    """Cancel tasks at random points of a command loop; count those that kept running."""
    import random

    lost = 0
    for _ in range(trials):
        stop = False

        async def commands(stop_flag=lambda: stop) -> None:
            while not stop_flag():
                await client.set("cadence:probe:cancel", "1", ex=60)
                await client.exists("cadence:probe:cancel")

        task = asyncio.create_task(commands())
        await asyncio.sleep(random.random() * 0.003)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=0.3)
        if not done:
            lost += 1
            stop = True
            await asyncio.wait([task], timeout=2)
    return lost
