"""Durable, provable runs: transparency-log appends, inclusion proofs at 1,000,000 entries,
verifying one run's bundle; with --crash N, N queued runs on two real Celery workers killed with
SIGKILL at random points (--kills K), reporting runs lost and steps repeated (target 0 and 0).

    .venv/bin/python benchmarks/durable.py [--entries 1000000] [--appends 20000]
    .venv/bin/python benchmarks/durable.py --crash 200 [--kills 12]
    .venv/bin/python benchmarks/durable.py --queue [--rate 200 --seconds 2 --runs 1000]

--queue: queued runs on two real Celery workers: enqueue-to-start p50/p99 (created_at to the
worker's claim) with runs enqueued at --rate per second for --seconds, then the throughput of
--runs short runs enqueued at once.

In a scratch database with one organization. Targets (issue 11): log appends >= 1,000/s; an
inclusion proof at 1,000,000 entries <= 1 ms; verifying one run's bundle <= 50 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid

from _setup import drop_scratch_database, use_scratch_database

DB_NAME = "cadence_bench_durable"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--crash", type=int, default=0, help="runs of the crash test (only)")
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--queue", action="store_true", help="queue latency and throughput (only)")
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()

    original = use_scratch_database(DB_NAME)
    import logging
    import os

    os.environ.setdefault("CADENCE_SIGNING_KEYS", "")
    import django

    django.setup()
    logging.disable(logging.WARNING)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, transaction
    from django_tenants.utils import schema_context

    from engine.models import Run, RunEvent
    from engine.trust import log, merkle, signing
    from engine.trust.bundle import bundle_build
    from engine.trust.models import LogHead
    from engine.trust.proofs import proof_create
    from engine.trust.snapshots import snapshot_store
    from engine.trust.verify_bundle import leaf_hash, verify_bundle, verify_inclusion
    from tenants.services import organization_create

    try:
        call_command("migrate", interactive=False, verbosity=0)
        get_user_model().objects.create_user(username="bench-owner", email="o@example.test")
        organization_create(
            name="Bench", slug="bench", owner_email="o@example.test", owner_username="bench-o"
        )
        schema = "org_bench"
        if args.crash:
            crash(schema, runs=args.crash, kills=args.kills)
            return
        if args.queue:
            queue_figures(schema, rate=args.rate, seconds=args.seconds, runs=args.runs)
            return

        with schema_context(schema):
            # --- appends -----------------------------------------------------------------------
            singles = 500
            started = time.perf_counter()
            for i in range(singles):
                log.log_append(entries=[(f"{i:064x}", uuid.uuid4())])
            single_rate = singles / (time.perf_counter() - started)
            batch, done = 200, singles
            started = time.perf_counter()
            while done < singles + args.appends:
                log.log_append(entries=[(f"{done + j:064x}", uuid.uuid4()) for j in range(batch)])
                done += batch
            batch_rate = args.appends / (time.perf_counter() - started)
            print("transparency log appends (PostgreSQL, one organization):")
            print(f"  one entry per transaction      {single_rate:8.0f} appends/s")
            print(f"  {batch} entries per transaction  {batch_rate:8.0f} appends/s")

            # --- a bundle: prove and verify one run -------------------------------------------
            snapshot = snapshot_store(definition={"flow": {"steps": [{"then": "a"}]}})
            run = Run.objects.create(
                orchestrator_slug="bench",
                trigger="rest",
                status="succeeded",
                input={"message": "hi"},
                output="hello",
                snapshot=snapshot,
            )
            RunEvent.objects.bulk_create(
                [
                    RunEvent(
                        run=run,
                        seq=i + 1,
                        kind="step",
                        name=f"s{i}",
                        outcome="completed",
                        data={"changes": {"x": i, "text": "y" * 200}},
                        at=run.started_at,
                    )
                    for i in range(12)
                ]
            )
            with transaction.atomic():
                proof = proof_create(run=run, snapshot_hash=snapshot.hash)
            bundle = bundle_build(run=run, proof=proof)
            keys = signing.keyring().verifiers
            assert verify_bundle(bundle, keys).ok
            timings = []
            for _ in range(200):
                t0 = time.perf_counter()
                verify_bundle(bundle, keys)
                timings.append((time.perf_counter() - t0) * 1000)
            print("verifying one run's bundle (12 steps, in process):")
            print(f"  p50 {statistics.median(timings):.2f} ms  p99 {_pct(timings, 0.99):.2f} ms")

            # --- a log of N entries, written straight into the tables ------------------------
            print(f"building a log of {args.entries:,} entries ...", flush=True)
            tree = merkle.MemoryTree()
            digests = [random.randbytes(32) for _ in range(args.entries)]
            for d in digests:
                tree.append(leaf_hash(d))
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL session_replication_role = replica")
                cursor.execute("DELETE FROM trust_lognode; DELETE FROM trust_logleaf")
                cursor.execute("DELETE FROM trust_treehead; DELETE FROM trust_executionproof")
                with cursor.copy("COPY trust_lognode (level, index, hash) FROM STDIN") as copy:
                    for (level, index), value in tree.nodes.items():
                        copy.write_row((level, index, value))
                run_id = str(uuid.uuid4())
                with cursor.copy(
                    "COPY trust_logleaf (index, digest, run_id, created_at) FROM STDIN"
                ) as copy:
                    for i, d in enumerate(digests):
                        copy.write_row((i, d.hex(), run_id, "2026-12-01T00:00:00Z"))
                LogHead.objects.filter(pk=1).update(
                    size=tree.size,
                    root=tree.frontier.root().hex(),
                    frontier=tree.frontier.to_json(),
                )
            cursor = connection.cursor()
            cursor.execute("ANALYZE trust_lognode")
            size = log.log_size()
            root = log.log_root(size)
            assert root == tree.root()
            db_times, mem_times = [], []
            for _ in range(1000):
                index = random.randrange(size)
                t0 = time.perf_counter()
                path = log.log_inclusion(index=index, size=size)
                db_times.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                tree.inclusion(index, size)
                mem_times.append((time.perf_counter() - t0) * 1000)
                verify_inclusion(index, size, leaf_hash(digests[index]), path, root)
            print(f"inclusion proof at {size:,} entries ({len(path)} hashes):")
            print(
                f"  from PostgreSQL (one query)  p50 {statistics.median(db_times):.3f} ms"
                f"  p99 {_pct(db_times, 0.99):.3f} ms"
            )
            print(
                f"  from memory                  p50 {statistics.median(mem_times):.3f} ms"
                f"  p99 {_pct(mem_times, 0.99):.3f} ms"
            )
    finally:
        drop_scratch_database(original, DB_NAME)


def queue_figures(schema: str, *, rate: int, seconds: float, runs: int) -> None:
    import os
    import signal

    from django.conf import settings
    from django.db.models import Max
    from django_tenants.utils import schema_context

    from engine.durable import services
    from engine.durable.models import QueuedRun
    from engine.durable.tests.crash_harness import celery_worker, worker_env
    from engine.models import Run
    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build

    queue = f"bench-queue-{uuid.uuid4().hex[:8]}"
    settings.CADENCE_ORG_QUEUES = {"bench": queue}
    with schema_context(schema):
        llm = llm_config_create(name="queue-llm", provider="offline", model="cadence-offline")
        instance = orchestrator_create(slug="queuebot", name="Queuebot", llm_config=llm)
    instance_build(
        schema_name=schema, instance_id=str(instance.id), expected_hash=instance.config_hash
    )
    env = worker_env(database_url=os.environ["DATABASE_URL"], CADENCE_ORG_QUEUES=f"bench={queue}")

    def enqueue_one(i: int) -> str:
        from django.db import connection

        try:
            with schema_context(schema):
                queued, _ = services.queued_run_enqueue(
                    instance=instance, message=f"hello {i}", idempotency_key=uuid.uuid4().hex
                )
            return str(queued.run_id)
        finally:
            connection.close()

    def enqueue(n: int, pace: float = 0.0) -> list[str]:
        """`n` runs, one every `pace` seconds (from 16 threads: one enqueue takes longer)."""
        from concurrent.futures import ThreadPoolExecutor

        started, futures = time.perf_counter(), []
        with ThreadPoolExecutor(16) as pool:
            for i in range(n):
                delay = started + i * pace - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(enqueue_one, i))
            return [f.result() for f in futures]

    def settle(ids: list[str]) -> None:
        while True:
            with schema_context(schema):
                left = QueuedRun.objects.filter(run_id__in=ids).exclude(
                    state__in=["succeeded", "dead"]
                )
                if not left.exists():
                    return
            time.sleep(0.1)

    workers = [celery_worker(queue, env) for _ in range(2)]
    try:
        settle(enqueue(4))  # the workers are up and warm
        n = int(rate * seconds)
        t0 = time.perf_counter()
        ids = enqueue(n, pace=1 / rate)
        achieved = n / (time.perf_counter() - t0)
        settle(ids)
        with schema_context(schema):
            waits = [
                (claimed - created).total_seconds() * 1000
                for created, claimed in QueuedRun.objects.filter(run_id__in=ids).values_list(
                    "created_at", "claimed_at"
                )
            ]
        print(f"queued runs on 2 Celery workers (offline model, default flow), queue {queue}:")
        print(
            f"  enqueue to start, {n} runs at {achieved:.0f}/s (asked {rate}/s): "
            f"p50 {statistics.median(waits):.0f} ms  p99 {_pct(waits, 0.99):.0f} ms"
        )
        with schema_context(schema):
            began = time.time()
        ids = enqueue(runs)
        enqueued = time.time() - began
        settle(ids)
        with schema_context(schema):
            last = Run.objects.filter(pk__in=ids).aggregate(last=Max("finished_at"))["last"]
            dead = QueuedRun.objects.filter(run_id__in=ids, state="dead").count()
        total = last.timestamp() - began
        print(
            f"  throughput, {runs} short runs enqueued at once (in {enqueued:.1f} s): "
            f"{runs / total:.1f} runs/s ({total:.1f} s to the last; {dead} dead)"
        )
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)
        client = services._redis()
        for key in client.scan_iter(match=f"cadence:runq:{queue}:*"):
            client.delete(key)


def crash(schema: str, *, runs: int, kills: int) -> None:
    import datetime as dt
    import os

    from django.conf import settings

    from engine.durable import services
    from engine.durable.tests.crash_harness import crash_run, tool_orchestrator_make, worker_env
    from engine.durable.tests.toolserver import ToolServer

    queue = f"bench-crash-{uuid.uuid4().hex[:8]}"
    settings.CADENCE_ORG_QUEUES = {"bench": queue}
    settings.CADENCE_EGRESS_ALLOW_PRIVATE = True
    services.LEASE = dt.timedelta(seconds=2)  # the workers' lease (worker_env)
    instance = tool_orchestrator_make(schema=schema, model="cadence-offline@5ms")
    env = worker_env(database_url=os.environ["DATABASE_URL"], CADENCE_ORG_QUEUES=f"bench={queue}")
    with ToolServer(delay=0.02) as server:
        report = crash_run(
            instance=instance, server=server, queue=queue, runs=runs, kills=kills, env=env,
            schema=schema, limit=1800,
        )  # fmt: skip
    client = services._redis()
    for key in client.scan_iter(match=f"cadence:runq:{queue}:*"):
        client.delete(key)
    print(f"crash test: {runs} runs on 2 Celery workers, SIGKILL at random points:")
    for name, value in report.summary().items():
        print(f"  {name:28} {value}")
    for run_id, what in {**report.repeated, **report.double_keys}.items():
        print(f"  {run_id}: {what}")


if __name__ == "__main__":
    main()
