"""cadence_site.aredis: async Redis commands that a cancel really stops (Python 3.11's wait_for
drops some cancellations; redis-py's socket writes use it)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError

from cadence_site.aredis import (
    CancellableConnection,
    CancellableUnixDomainSocketConnection,
    async_redis,
    lost_cancellations,
)


@pytest.mark.asyncio
async def test_no_cancellation_is_lost_mid_command():
    client = async_redis(settings.REDIS_URL, socket_timeout=10)
    try:
        assert await lost_cancellations(client, trials=150) == 0
        # The connections a cancel interrupted were dropped, not reused half-written.
        assert await client.set("cadence:probe:after", "ok", ex=10)
        assert await client.get("cadence:probe:after") == b"ok"
    finally:
        await client.aclose()


def test_the_url_scheme_still_picks_the_transport():
    tcp = async_redis("redis://127.0.0.1:6379/0")
    unix = async_redis("unix:///tmp/redis.sock?db=0")

    assert tcp.connection_pool.connection_class is CancellableConnection
    assert unix.connection_pool.connection_class is CancellableUnixDomainSocketConnection


@pytest.mark.asyncio
async def test_an_unreachable_server_is_a_connection_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = async_redis(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1, socket_timeout=1)
    try:
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(client.ping(), 5)
    finally:
        await client.aclose()
