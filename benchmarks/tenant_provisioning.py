"""Organization provisioning: template-DDL copy vs migrating each schema.

    .venv/bin/python benchmarks/tenant_provisioning.py [--count 200] [--migrate-count 10]

Creates organizations through `organization_create` in a scratch database and prints median and
p95 seconds per organization for the first 10 and the last 10, then the same for the migrate path.
Owners are one existing user, so the figures measure provisioning, not PBKDF2 (reported apart).
Targets: median <= 0.5 s with cloning; last 10 no slower than first 10 by more than 1.5x;
cloning >= 10x faster than migrating.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from _setup import drop_scratch_database, percentile, use_scratch_database

DB_NAME = "cadence_bench_provisioning"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--migrate-count", type=int, default=10)
    args = parser.parse_args()

    original = use_scratch_database(DB_NAME)
    import django

    django.setup()
    logging.disable(logging.WARNING)
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.core.management import call_command

    from tenants.models import TemplateSnapshot
    from tenants.services import organization_create

    try:
        started = time.perf_counter()
        call_command("migrate", interactive=False, verbosity=0)
        print(f"migrated scratch database {DB_NAME} in {time.perf_counter() - started:.1f} s")
        get_user_model().objects.create_user(
            username="bench-owner", email="bench-owner@example.test"
        )

        clone: list[float] = []
        for i in range(args.count):
            t0 = time.perf_counter()
            organization_create(
                name=f"Bench {i}", slug=f"bench-{i:05d}", owner_email="bench-owner@example.test"
            )
            clone.append(time.perf_counter() - t0)
            if (i + 1) % 50 == 0:
                print(
                    f"  {i + 1}/{args.count} organizations, last 50 median {statistics.median(clone[-50:]):.3f} s",
                    flush=True,
                )

        snapshot = TemplateSnapshot.objects.get()
        snapshot_fields = {
            "ddl": snapshot.ddl,
            "migration_rows": snapshot.migration_rows,
            "fingerprint": snapshot.migrations_fingerprint,
        }
        TemplateSnapshot.objects.all().delete()
        migrate: list[float] = []
        for i in range(args.migrate_count):
            t0 = time.perf_counter()
            organization_create(
                name=f"Migrated {i}",
                slug=f"migrated-{i:03d}",
                owner_email="bench-owner@example.test",
            )
            migrate.append(time.perf_counter() - t0)
        TemplateSnapshot.objects.create(
            schema_name=snapshot.schema_name,
            ddl=snapshot_fields["ddl"],
            migration_rows=snapshot_fields["migration_rows"],
            migrations_fingerprint=snapshot_fields["fingerprint"],
        )

        # The schema alone, without the organization's rows (owner, key, domain, audit) around it.
        from django.db import connection

        from tenants import provisioning

        schema_clone, schema_migrate = [], []
        for i in range(args.migrate_count):
            t0 = time.perf_counter()
            provisioning.schema_provision(f"bench_clone_{i}")
            schema_clone.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            provisioning._provision_by_migrating(f"bench_migrate_{i}")
            schema_migrate.append(time.perf_counter() - t0)
        connection.set_schema_to_public()

        t0 = time.perf_counter()
        make_password("a-new-owner-password")
        hash_cost = time.perf_counter() - t0

        first, last = clone[:10], clone[-10:]
        rows = [
            ("clone, first 10", first),
            (f"clone, last 10 (of {args.count})", last),
            ("clone, all", clone),
            (f"migrate, {args.migrate_count}", migrate),
        ]
        print()
        print(f"{'path':32} {'median s':>10} {'p95 s':>10}")
        for label, values in rows:
            print(f"{label:32} {statistics.median(values):10.3f} {percentile(values, 95):10.3f}")
        ratio_last_first = statistics.median(last) / statistics.median(first)
        speedup = statistics.median(migrate) / statistics.median(clone)
        print()
        print(
            f"last 10 / first 10 (median): {ratio_last_first:.2f}x   target <= 1.5x   {'OK' if ratio_last_first <= 1.5 else 'MISSED'}"
        )
        print(
            f"clone median: {statistics.median(clone):.3f} s          target <= 0.5 s  {'OK' if statistics.median(clone) <= 0.5 else 'MISSED'}"
        )
        print(
            f"migrate / clone (median): {speedup:.1f}x      target >= 10x    {'OK' if speedup >= 10 else 'MISSED'}"
        )
        schema_ratio = statistics.median(schema_migrate) / statistics.median(schema_clone)
        print(
            f"schema alone: clone {statistics.median(schema_clone):.3f} s, migrate {statistics.median(schema_migrate):.3f} s (median of {args.migrate_count}): {schema_ratio:.1f}x  target >= 10x  {'OK' if schema_ratio >= 10 else 'MISSED'}"
        )
        print(f"(a new owner adds one PBKDF2 password hash: {hash_cost:.3f} s)")
    finally:
        drop_scratch_database(original, DB_NAME)


if __name__ == "__main__":
    main()
