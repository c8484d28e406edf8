"""Plugins: upload pipeline memory, upload to callable, resolution, sandbox and MCP call overhead.

    .venv/bin/python benchmarks/plugins.py [--uploads 20] [--runs 200]

Targets (issue 12): upload to callable p95 <= 1 s for a 1 MB package; peak memory of the upload
pipeline <= 64 MB on every package of the hostile corpus; resolution of an orchestrator with 50
plugins and 200 dependency edges <= 50 ms; a sandboxed code note's start-to-result overhead
<= 5 ms per call; an MCP tool call's overhead over the server's own time <= 5 ms.

Uses a scratch database on the configured PostgreSQL (dropped at the end), a local MCP server
process it starts and stops, and the Monty worker pool.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

from _setup import ROOT, drop_scratch_database, percentile, use_scratch_database

DB_NAME = "cadence_bench_plugins"


def _ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values):.2f} ms, p95 {percentile(values, 95):.2f} ms"


def bench_pipeline_memory() -> None:
    from plugins.archive import PackageError, inspect_package
    from plugins.tests import hostile

    worst = ("", 0)
    for name, (build, _) in sorted(hostile.CORPUS.items()):
        raw = build()
        tracemalloc.start()
        try:
            inspect_package(raw, expected_kind="tenant")
        except PackageError:
            pass
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"  hostile {name:18} {len(raw) / 1024:9.1f} KiB  peak {peak / 2**20:6.2f} MiB")
        worst = max(worst, (name, peak), key=lambda item: item[1])
    print(
        f"pipeline peak memory, worst of the hostile corpus: {worst[1] / 2**20:.2f} MiB ({worst[0]}; target <= 64 MiB)"
    )


def _one_mb_package(version: str, base_url: str) -> bytes:
    from plugins.archive import pack

    manifest = {
        "schema_version": 1,
        "id": "com.bench.weather",
        "name": "Bench",
        "version": version,
        "kind": "tenant",
        "provides": {
            "tools": [
                {
                    "name": "forecast",
                    "type": "http",
                    "description": "x",
                    "method": "GET",
                    "url": base_url + "/f/{city}",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                }
            ]
        },
        "capabilities": {"egress": ["127.0.0.1"]},
    }
    data = random.Random(version).randbytes(1024 * 1024)  # incompressible: the ZIP stays ~1 MB
    return pack({"cadence-plugin.json": json.dumps(manifest).encode(), "assets/data.bin": data})


def bench_upload_to_callable(uploads: int) -> None:
    import threading
    from http.server import ThreadingHTTPServer

    from django.conf import settings
    from django_tenants.utils import schema_context

    from orchestrators.models import OrchestratorInstance
    from orchestrators.services import llm_config_create, orchestrator_create, runtime_config
    from plugins.binding import plugin_set_prepare
    from plugins.services import plugin_upload
    from plugins.tests.conftest import _Handler
    from tenants.services import organization_create

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.CADENCE_PLUGIN_CACHE_DIR = tempfile.mkdtemp(prefix="bench-plugin-cache-")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tempfile.mkdtemp(prefix="bench-plugin-media-")},
        },
    }
    from django.core.files.storage import storages

    storages._storages = {}
    org = organization_create(
        name="Bench", slug="bench", owner_email="b@bench.test", owner_username="bench-o"
    ).organization
    times = []
    with schema_context(org.schema_name):
        llm = llm_config_create(name="offline", provider="offline", model="m")
        instance = orchestrator_create(slug="bench", name="Bench", llm_config=llm)
        plugin_upload(raw=_one_mb_package("1.0.0", base_url), uploaded_by="bench")
        instance.plugins, instance.plugin_lock = plugin_set_prepare(
            entries=[{"id": "com.bench.weather", "version": ">=1"}]
        )
        instance.save()
        for index in range(1, uploads + 1):
            raw = _one_mb_package(f"1.{index}.0", base_url)
            started = time.perf_counter()
            # The upload re-resolves and rebuilds the orchestrators using the plugin (the build
            # task runs inline here); then a process loads the runtime and calls the new tool.
            plugin_upload(raw=raw, uploaded_by="bench")
            instance = OrchestratorInstance.objects.select_related("llm_config").get(pk=instance.pk)
            assert instance.plugin_lock["com.bench.weather"]["version"] == f"1.{index}.0"
            tool = next(
                t for t in runtime_config(instance, org_slug="bench").tools if t.name == "forecast"
            )
            result = asyncio.run(tool.fn({"city": "x"}, None))
            times.append((time.perf_counter() - started) * 1000)
            assert result["status"] == 200, result
    server.shutdown()
    print(
        f"upload to callable, 1 MB package ({len(raw) / 2**20:.2f} MiB), {uploads} uploads: {_ms(times)} (target p95 <= 1000 ms)"
    )


def _synthetic_catalog(plugins: int, edges: int):
    from plugins.resolution import Candidate

    rng = random.Random(12)
    ids = [f"com.bench.p{i:02d}" for i in range(plugins)]
    pairs = set()
    while len(pairs) < edges:  # only from lower to higher index: a DAG, no cycles
        a, b = sorted(rng.sample(range(plugins), 2))
        pairs.add((a, b))
    deps: dict[int, list[int]] = {}
    for a, b in pairs:
        deps.setdefault(a, []).append(b)
    catalog = {}
    for i, pid in enumerate(ids):
        catalog[pid] = [
            Candidate(
                pid, f"{major}.{minor}.0", tuple(sorted((ids[b], ">=1.0") for b in deps.get(i, [])))
            )
            for major in (1, 2)
            for minor in range(3)
        ]
    return ids, catalog


def bench_resolution(runs: int) -> None:
    from plugins.resolution import resolve

    ids, catalog = _synthetic_catalog(50, 200)
    requirements = [(pid, ">=1,<3") for pid in ids]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        chosen = resolve(requirements, catalog)
        times.append((time.perf_counter() - started) * 1000)
    assert len(chosen) == 50 and all(c.version == "2.2.0" for c in chosen.values())
    print(
        f"resolution, 50 plugins x 6 versions, 200 dependency edges: {_ms(times)} (target <= 50 ms)"
    )


def bench_sandbox(runs: int) -> None:
    from plugins.sandbox import run_code

    async def main() -> list[float]:
        await run_code("0", inputs={})  # the pool's first worker starts here
        times = []
        for i in range(runs):
            started = time.perf_counter()
            ran = await run_code("{'n': args['n'] * 2}", inputs={"args": {"n": i}})
            times.append((time.perf_counter() - started) * 1000)
            assert ran["result"] == {"n": i * 2}
        return times

    print(f"sandboxed code note, start to result: {_ms(asyncio.run(main()))} (target <= 5 ms)")


def bench_mcp(runs: int) -> None:
    import httpx2
    from django.conf import settings
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from plugins.mcp import LIST_CHECK_INTERVAL, _connect_mode, _result, _Session
    from plugins.tests.mcp_server import TOKEN

    settings.CADENCE_EGRESS_ALLOWED_HOSTS = ["127.0.0.1"]  # the local server the bench starts

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "plugins.tests.mcp_server", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)

        async def bare() -> list[float]:
            # The server's own time as a client sees it at best: one open session, one call each.
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                async with Client(streamable_http_client(url, http_client=http)) as client:
                    await client.call_tool("echo", {"text": "warm"})
                    times = []
                    for _ in range(runs):
                        started = time.perf_counter()
                        await client.call_tool("echo", {"text": "x"})
                        times.append((time.perf_counter() - started) * 1000)
                    return times

        async def cadence(check_list: bool) -> list[float]:
            # What a Cadence tool call does: egress check, connect (the version pinned at
            # registration: no probe), the tool-list check when its window has passed, the call.
            times = []
            for _ in range(max(runs // 4, 10)):
                started = time.perf_counter()
                async with _Session(url, _connect_mode("auto", "2026-07-28"), TOKEN) as client:
                    if check_list:
                        await client.list_tools()
                    _result(await client.call_tool("echo", {"text": "x"}))
                times.append((time.perf_counter() - started) * 1000)
            return times

        base = asyncio.run(bare())
        steady = asyncio.run(cadence(False))
        checked = asyncio.run(cadence(True))
        overhead = statistics.median(steady) - statistics.median(base)
        print(f"MCP call on an open session (the server's time as seen by a client): {_ms(base)}")
        print(f"MCP tool call as Cadence makes it (connect + egress + call): {_ms(steady)}")
        print(
            f"  ... with the tool-list check (once per {LIST_CHECK_INTERVAL:.0f} s per server): {_ms(checked)}"
        )
        print(
            f"MCP call overhead over the server's own time: {overhead:.2f} ms at p50 (target <= 5 ms)"
        )
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    original = use_scratch_database(DB_NAME)
    import logging

    import django

    django.setup()
    logging.disable(logging.WARNING)
    from cadence_site.celery import app

    app.conf.task_always_eager = True  # orchestrator builds run inline: no worker needed

    try:
        bench_pipeline_memory()
        bench_resolution(args.runs)
        bench_sandbox(args.runs)
        bench_mcp(args.runs)
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)
        bench_upload_to_callable(args.uploads)
    finally:
        drop_scratch_database(original, DB_NAME)


if __name__ == "__main__":
    main()
