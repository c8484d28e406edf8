"""The limiter's cost and the budgets' overshoot, on the configured (loopback) Redis.

    .venv/bin/python benchmarks/limits.py [--decisions 5000]

1. Decision latency: one GCRA decision over two buckets (the organization's and a key's), as a
   REST call or a /v1 call makes it: p50 / p99 in ms, sync (REST) and async (/v1) clients.
   Target p99 <= 2 ms.
2. CPU added per request: process CPU time of building the buckets and deciding (everything a
   request does with limits on and skips with them off), per request. Target <= 0.3 ms.
   Redis's own CPU for the script is reported beside it (INFO, shared server: indicative).
3. Overshoot: 200 streamed calls over 4 worker processes against one token budget, each
   reserving prompt + max_tokens and settling a use of at most that: tokens used over the budget.
   Target 0.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from _setup import ROOT, percentile

sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cadence_site.settings")
os.environ.setdefault("CADENCE_DB_POOL", "0")


def _setup() -> None:
    if not os.environ.get("REDIS_URL") or not os.environ.get("DATABASE_URL"):
        from cadence_site import embedded

        urls = embedded.discover(ROOT / "var") or embedded.ensure(ROOT / "var")
        for key, value in urls.items():
            os.environ.setdefault(key, value)
    import django

    django.setup()


def _limits(tenant: str):
    from tenants.limits.plans import KeyLimits, Limits

    limits = Limits(
        tenant=tenant,
        requests_per_minute=10_000_000,
        request_burst=None,
        tokens_per_minute=None,
        tokens_per_day=None,
        tokens_per_month=None,
        concurrent_streams=None,
        max_orchestrators=20,
        max_members=50,
        max_api_keys=20,
        max_plugins=50,
        max_storage_bytes=1,
        run_retention_days=30,
    )
    return limits, KeyLimits(requests_per_minute=10_000_000)


def _redis_cpu() -> float:
    from tenants.ratelimit import sync_client

    info = sync_client().info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def decisions(count: int) -> None:
    from tenants import ratelimit
    from tenants.limits.enforce import Caller, request_buckets

    tenant = str(uuid.uuid4())
    limits, key_limits = _limits(tenant)
    caller = Caller("key:ck_benchmark", "1")
    for _ in range(200):  # warm: connection, script cache
        ratelimit.decide(request_buckets(limits=limits, caller=caller, key_limits=key_limits))

    latencies = []
    cpu0, redis0 = time.process_time(), _redis_cpu()
    for _ in range(count):
        started = time.perf_counter()
        decision = ratelimit.decide(
            request_buckets(limits=limits, caller=caller, key_limits=key_limits)
        )
        latencies.append(time.perf_counter() - started)
        assert decision.allowed and not decision.degraded
    cpu = (time.process_time() - cpu0) / count
    redis_cpu = (_redis_cpu() - redis0) / count
    latencies.sort()
    print(
        f"sync decision (2 buckets, {count}x): p50 {percentile(latencies, 50) * 1000:.3f} ms, "
        f"p99 {percentile(latencies, 99) * 1000:.3f} ms"
    )
    print(
        f"CPU added per request (limits on vs off): {cpu * 1000:.3f} ms in the server process, "
        f"+{redis_cpu * 1000:.3f} ms in Redis (shared server, indicative)"
    )

    async def run() -> list[float]:
        out = []
        for _ in range(200):
            await ratelimit.adecide(
                request_buckets(limits=limits, caller=caller, key_limits=key_limits)
            )
        for _ in range(count):
            started = time.perf_counter()
            await ratelimit.adecide(
                request_buckets(limits=limits, caller=caller, key_limits=key_limits)
            )
            out.append(time.perf_counter() - started)
        return out

    cpu0 = time.process_time()
    async_latencies = sorted(asyncio.run(run()))
    async_cpu = (time.process_time() - cpu0) / (count + 200)
    print(
        f"async decision (2 buckets, {count}x): p50 {percentile(async_latencies, 50) * 1000:.3f} ms, "
        f"p99 {percentile(async_latencies, 99) * 1000:.3f} ms, CPU {async_cpu * 1000:.3f} ms"
    )
    ratelimit.clear_tenant(tenant)


BUDGET = 50_000


def _worker(tenant: str, calls: int, max_tokens: int, seed: int, out) -> None:
    from tenants.limits import budgets

    budget = budgets.Budget(tenant, "*", "tokens_per_minute", BUDGET, "organization")
    rng = random.Random(seed)

    def call(i: int) -> tuple[int, int]:
        prompt = rng.randint(50, 400)
        lease = budgets.reserve(
            budgets=[budget], lease_id=f"{seed}:{i}", amount=prompt + max_tokens
        )
        if not isinstance(lease, budgets.Lease):
            return 0, 0
        time.sleep(rng.random() * 0.05)  # the stream
        actual = prompt + rng.randint(0, max_tokens)  # never past max_tokens
        budgets.settle(lease=lease, actual=actual)
        return 1, actual

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(call, range(calls)))
    out.put((sum(r[0] for r in results), sum(r[1] for r in results)))


def overshoot(*, processes: int = 4, calls: int = 200, max_tokens: int = 500) -> None:
    from tenants.limits import budgets

    tenant = str(uuid.uuid4())
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(tenant, calls // processes, max_tokens, i, out))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join()
    admitted = sum(r[0] for r in results)
    spent = sum(r[1] for r in results)
    budget = budgets.Budget(tenant, "*", "tokens_per_minute", BUDGET, "organization")
    settled, held = budgets.used(budget=budget)
    print(
        f"overshoot with max_tokens ({calls} calls, {processes} processes, budget {BUDGET}): "
        f"{admitted} admitted, {spent} tokens used, {max(0, spent - BUDGET)} over the budget "
        f"(Redis: {settled} settled, {held} still held)"
    )
    budgets.clear_tenant(tenant)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=5000)
    args = parser.parse_args()
    _setup()
    decisions(args.decisions)
    overshoot()


if __name__ == "__main__":
    main()
