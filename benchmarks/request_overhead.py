"""Per-request overhead of tenancy + API-key auth, at 2 and at 1,000 organizations.

    .venv/bin/python benchmarks/request_overhead.py [--requests 2000] [--orgs 1000]

Starts the real server (uvicorn, as `make run` does) on a scratch database, then times
`GET /api/v1/orgs/<slug>/` with an API key at 1 and 50 concurrent keep-alive clients: p50/p99
latency and requests/s, first with 2 organizations in the database, then with 1,000.
Targets: the figures do not change with the organization count (within noise); p50 <= 10 ms at 1 client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

from _setup import ROOT, drop_scratch_database, percentile, use_scratch_database

DB_NAME = "cadence_bench_requests"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _client(port: int, path: str, key: str, count: int, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    )
    try:
        for _ in range(count):
            started = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not status.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected response: {status!r}")
    finally:
        writer.close()


async def _measure(port: int, path: str, key: str, concurrency: int, total: int) -> dict:
    latencies: list[float] = []
    per_client = max(1, total // concurrency)
    await asyncio.gather(*(_client(port, path, key, 20, []) for _ in range(concurrency)))  # warm-up
    started = time.perf_counter()
    await asyncio.gather(
        *(_client(port, path, key, per_client, latencies) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - started
    return {
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "rps": len(latencies) / elapsed,
    }


def _wait_for(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--orgs", type=int, default=1000)
    args = parser.parse_args()

    original = use_scratch_database(DB_NAME)
    import logging

    import django

    django.setup()
    logging.disable(logging.WARNING)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from tenants.services import organization_create

    server = None
    try:
        call_command("migrate", interactive=False, verbosity=0)
        get_user_model().objects.create_user(
            username="bench-owner", email="bench-owner@example.test"
        )
        target = organization_create(
            name="Target", slug="target", owner_email="bench-owner@example.test"
        )
        organization_create(name="Other", slug="other", owner_email="bench-owner@example.test")
        key, path = target.api_key_secret, "/api/v1/orgs/target/"

        port = _free_port()
        env = dict(os.environ, CADENCE_LOG_LEVEL="WARNING")
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "cadence_site.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
                "--lifespan",
                "off",
            ],
            cwd=ROOT,
            env=env,
        )
        _wait_for(port)

        results: dict[tuple[int, int], dict] = {}
        for org_count in (2, args.orgs):
            if org_count > 2:
                print(f"creating {org_count - 2} more organizations...", flush=True)
                for i in range(org_count - 2):
                    organization_create(
                        name=f"Filler {i}",
                        slug=f"filler-{i:05d}",
                        owner_email="bench-owner@example.test",
                    )
            for concurrency in (1, 50):
                results[(org_count, concurrency)] = asyncio.run(
                    _measure(port, path, key, concurrency, args.requests)
                )
                r = results[(org_count, concurrency)]
                print(
                    f"  {org_count:>5} orgs, {concurrency:>2} clients: p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms  {r['rps']:8.1f} req/s",
                    flush=True,
                )

        print()
        print(f"{'orgs':>6} {'clients':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
        for (org_count, concurrency), r in results.items():
            print(
                f"{org_count:>6} {concurrency:>8} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rps']:8.1f}"
            )
        p50 = results[(2, 1)]["p50_ms"]
        print()
        print(
            f"p50 at 1 client, 2 orgs: {p50:.2f} ms   target <= 10 ms   {'OK' if p50 <= 10 else 'MISSED'}"
        )
        for concurrency in (1, 50):
            small, large = results[(2, concurrency)], results[(args.orgs, concurrency)]
            print(
                f"{concurrency:>2} clients: p50 {large['p50_ms'] / small['p50_ms']:.2f}x, req/s {large['rps'] / small['rps']:.2f}x at {args.orgs} vs 2 orgs"
            )
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        drop_scratch_database(original, DB_NAME)


if __name__ == "__main__":
    main()
