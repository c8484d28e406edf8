"""Where database calls from async code run: a sync caller's thread (its transaction), else the
database executor's threads, never asgiref's one shared thread."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import async_to_sync
from django.db import connection

from tenants.context import in_public, in_tenant


def _where(**_: object) -> tuple[str, bool, str]:
    return threading.current_thread().name, connection.in_atomic_block, connection.schema_name


@pytest.mark.django_db
def test_under_a_sync_caller_calls_run_on_its_thread_inside_its_transaction():
    name, in_transaction, schema = async_to_sync(in_public)(_where)

    assert name == threading.current_thread().name
    assert in_transaction  # the test's own transaction: uncommitted rows are visible
    assert schema == "public"


def test_from_a_server_loop_calls_run_on_the_database_threads_in_their_schema(world, committed_db):
    async def many():
        return await asyncio.gather(*(in_tenant("org_alpha", _where) for _ in range(8)))

    # The executor's threads open their own connections: committed_db lets them (without it the
    # test passed only when an earlier test had left those threads connected).
    seen: list = []
    runner = threading.Thread(target=lambda: seen.extend(asyncio.run(many())))
    runner.start()
    runner.join(30)

    assert len(seen) == 8
    assert all(name.startswith("cadence-db") for name, _, _ in seen), seen
    assert {schema for _, _, schema in seen} == {"org_alpha"}
    assert not any(in_transaction for _, in_transaction, _ in seen)


def test_the_database_threads_are_cpus_plus_four_or_the_setting_within_the_pool(settings):
    import os

    from tenants.context import db_thread_count, thread_count

    assert thread_count(0, 2, None) == 6
    assert thread_count(0, 2, 20) == 6
    assert thread_count(8, 2, 20) == 8
    assert thread_count(8, 2, 4) == 4
    assert thread_count(0, 64, 20) == 20
    settings.CADENCE_DB_THREADS = 5
    assert db_thread_count() == 5  # tests run without the pool
    settings.CADENCE_DB_THREADS = 0
    assert db_thread_count() == (os.cpu_count() or 1) + 4
