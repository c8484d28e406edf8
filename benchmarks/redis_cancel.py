"""How many task cancellations redis-py loses on this Python, and how many cadence_site.aredis does.

.venv/bin/python benchmarks/redis_cancel.py [trials]     (REDIS_URL, default 127.0.0.1:6379/0)
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from cadence_site.aredis import async_redis, lost_cancellations  # noqa: E402


async def main(url: str, trials: int) -> None:
    plain = aioredis.Redis.from_url(url, socket_timeout=10)
    cancellable = async_redis(url, socket_timeout=10)
    print(f"python {sys.version.split()[0]}, redis-py {redis.__version__}")
    print(f"redis-py connections: {await lost_cancellations(plain, trials)}/{trials} cancels lost")
    print(
        f"cadence_site.aredis:  {await lost_cancellations(cancellable, trials)}/{trials} cancels lost"
    )
    await plain.aclose()
    await cancellable.aclose()


if __name__ == "__main__":
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    asyncio.run(main(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), trials))
