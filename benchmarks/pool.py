"""Orchestrator runtimes: build time per framework, memory per runtime, hot preload at start-up.

    .venv/bin/python benchmarks/pool.py [--orgs 100] [--per-org 10]

In a scratch database: 100 organizations with 10 hot native instances each (1,000), then a fresh
pool preloads them as a starting process does. Targets: native build <= 5 ms and <= 200 KB per
runtime; 1,000 hot instances preloaded in <= 10 s.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc

from _setup import drop_scratch_database, use_scratch_database

DB_NAME = "cadence_bench_pool"


def _time_builds(adapter, config, count: int) -> float:
    adapter.build(config)  # first build imports and warms caches
    started = time.perf_counter()
    for _ in range(count):
        adapter.build(config)
    return (time.perf_counter() - started) / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orgs", type=int, default=100)
    parser.add_argument("--per-org", type=int, default=10)
    args = parser.parse_args()

    original = use_scratch_database(DB_NAME)
    import logging

    import django

    django.setup()
    logging.disable(logging.WARNING)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django_tenants.utils import schema_context

    from orchestrators.adapters import adapter_for
    from orchestrators.models import OrchestratorInstance
    from orchestrators.pool import RuntimePool
    from orchestrators.runtime import LLMSettings, RuntimeConfig
    from orchestrators.services import config_hash, llm_config_create, orchestrator_create
    from orchestrators.tools import builtin_tools
    from tenants.services import organization_create

    try:
        call_command("migrate", interactive=False, verbosity=0)
        get_user_model().objects.create_user(
            username="bench-owner", email="bench-owner@example.test"
        )

        tools = (builtin_tools.get("clock"), builtin_tools.get("calculator"))
        print("build time per instance (ms, mean of repeated builds):")
        native = RuntimeConfig(
            org_slug="b",
            instance_id="i",
            slug="s",
            framework="cadence",
            flow={},
            system_prompt="Be brief.",
            llm=LLMSettings(provider="offline", model="m"),
            tools=tools,
        )
        remote = LLMSettings(
            provider="openai_compatible",
            model="gpt-x",
            base_url="https://api.openai.com/v1",
            api_key="sk-bench",
        )
        for framework, config, count in (
            ("cadence", native, 500),
            ("langgraph", None, 20),
            ("openai_agents", None, 20),
        ):
            adapter = adapter_for(framework)
            if not adapter.available():
                print(f"  {framework:14} not installed")
                continue
            if config is None:
                config = RuntimeConfig(
                    org_slug="b",
                    instance_id="i",
                    slug="s",
                    framework=framework,
                    flow={},
                    system_prompt="Be brief.",
                    llm=remote,
                    tools=tools,
                )
            print(f"  {framework:14} {_time_builds(adapter, config, count):8.3f} ms")

        print(f"creating {args.orgs} organizations x {args.per_org} hot instances...", flush=True)
        started = time.perf_counter()
        for o in range(args.orgs):
            created = organization_create(
                name=f"Org {o}", slug=f"org-{o:04d}", owner_email="bench-owner@example.test"
            )
            with schema_context(created.organization.schema_name):
                llm = llm_config_create(name="offline", provider="offline", model="m")
                for i in range(args.per_org):
                    instance = orchestrator_create(
                        slug=f"agent-{i}",
                        name=f"Agent {i}",
                        llm_config=llm,
                        tools=["clock", "calculator"],
                        tier="hot",
                    )
                    # Marked ready directly: the build task's own cost is not what is measured here.
                    OrchestratorInstance.objects.filter(pk=instance.pk).update(
                        status="ready", config_hash=config_hash(instance)
                    )
        print(f"  set up in {time.perf_counter() - started:.1f} s")

        pool = RuntimePool(warm_max=0)
        started = time.perf_counter()
        count = pool.preload_hot()
        preload = time.perf_counter() - started

        # Memory measured on a second preload under tracemalloc (which slows allocation, so it is
        # kept out of the timing above).
        pool.clear()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        pool.preload_hot()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        per_runtime_kb = (after - before) / max(count, 1) / 1024

        # The preload includes a database read per instance; building alone, for comparison:
        samples = []
        for entry in list(pool._entries.values())[:200]:
            t0 = time.perf_counter()
            adapter_for("cadence").build(entry.runtime.config)
            samples.append((time.perf_counter() - t0) * 1000)

        print()
        print(
            f"hot instances preloaded: {count} in {preload:.2f} s ({preload / max(count, 1) * 1000:.2f} ms each, database reads included)"
        )
        print(
            f"memory per built native runtime: {per_runtime_kb:.1f} KB (tracemalloc, pool entries retained)"
        )
        print(
            f"native build alone, median of 200 real instances: {statistics.median(samples):.3f} ms"
        )
        print()
        native_ms = statistics.median(samples)
        print(
            f"native build <= 5 ms:        {native_ms:.3f} ms  {'OK' if native_ms <= 5 else 'MISSED'}"
        )
        print(
            f"memory <= 200 KB/runtime:    {per_runtime_kb:.1f} KB  {'OK' if per_runtime_kb <= 200 else 'MISSED'}"
        )
        print(
            f"1,000 hot preloaded <= 10 s: {preload:.2f} s  {'OK' if preload <= 10 else 'MISSED'}"
        )
    finally:
        drop_scratch_database(original, DB_NAME)


if __name__ == "__main__":
    main()
