"""One worker of the lock race (tests/test_locking.py): run as its own process."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import django


async def main(worker: str, rounds: int, key: str, prefix: str) -> None:
    from asgiref.sync import sync_to_async
    from django.db import transaction
    from django_tenants.utils import schema_context

    from cadence_site.aredis import async_redis
    from engine.durable.locking import RedisLock, fence_advance

    client = async_redis(os.environ["REDIS_URL"])
    lock = RedisLock(client, schema_name="org_alpha", key=key, lease_seconds=2)

    def fenced(token: int) -> None:
        with schema_context("org_alpha"), transaction.atomic():
            fence_advance(key=key, token=token)

    async def section(lease) -> None:
        start = time.time()
        # A read-modify-write that loses updates whenever two holders overlap.
        value = int(await client.get(f"{prefix}:counter") or 0)
        await asyncio.sleep(0.003)
        await client.set(f"{prefix}:counter", value + 1)
        await sync_to_async(fenced)(lease.token)
        await client.rpush(f"{prefix}:spans", f"{worker} {lease.token} {start} {time.time()}")

    for _ in range(rounds):
        await lock.run_exclusive(section, wait=60)
    await client.aclose()


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cadence_site.settings")
    django.setup()
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]))
