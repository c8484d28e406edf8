"""Green database calls (cadence_site/greendb.py): synchronous Django database code run on the
event loop's thread, with a connection of its own, its waits done by the loop. That the loop
serves other tasks meanwhile, and the attacks on it: test_greendb_review.py."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django_tenants.utils import schema_context

from cadence_site import greendb

pytestmark = pytest.mark.asyncio


def _schema_and_backend() -> tuple[str, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema(), pg_backend_pid()")
        return cursor.fetchone()


async def test_a_green_call_runs_on_the_loops_thread_with_a_connection_of_its_own(
    world, committed_db
):
    loop_thread = threading.get_ident()

    def call():
        with schema_context("org_alpha"):
            schema, pid = _schema_and_backend()
        return threading.get_ident(), greendb.in_green(), connection.green_opened, schema, pid

    thread, green, opened, schema, pid = await greendb.run(call)

    assert (thread, green, schema) == (loop_thread, True, "org_alpha")
    assert opened is not None  # one of the loop's own wrappers, not the thread's
    assert greendb.in_green() is False
    # The loop's thread's own connection is untouched (no wrapper made a connection there).
    assert getattr(connection, "green_opened", None) is None
    # Given back and reused: the next call gets the same backend.
    assert (await greendb.run(_schema_and_backend))[1] == pid


async def test_interleaved_green_calls_keep_their_own_schemas_and_transactions(world, committed_db):
    """Each call's transaction and search_path are its own though they share one thread: one
    rolls back while the other, interleaved with it statement by statement, commits."""
    from engine.models import Run

    made: list[str] = []

    def write(schema: str, fail: bool) -> list[str]:
        seen = []
        with schema_context(schema):
            try:
                with transaction.atomic():
                    for n in range(4):
                        with connection.cursor() as cursor:
                            cursor.execute("SELECT current_schema() FROM pg_sleep(0.02)")
                            seen.append(cursor.fetchone()[0])
                        run = Run.objects.create(orchestrator_slug=f"green-{schema}-{n}")
                        made.append((schema, str(run.pk)))
                    if fail:
                        raise RuntimeError("roll back")
            except RuntimeError:
                pass
        return seen

    try:
        seen = await asyncio.gather(
            greendb.run(lambda: write("org_alpha", False)),
            greendb.run(lambda: write("org_bravo", True)),
            greendb.run(lambda: write("org_alpha", True)),
            greendb.run(lambda: write("org_bravo", False)),
        )
        assert seen == [["org_alpha"] * 4, ["org_bravo"] * 4, ["org_alpha"] * 4, ["org_bravo"] * 4]

        def stored(schema: str) -> list[str]:
            with schema_context(schema):
                return sorted(
                    Run.objects.filter(orchestrator_slug__startswith="green-").values_list(
                        "orchestrator_slug", flat=True
                    )
                )

        assert await greendb.run(lambda: stored("org_alpha")) == [
            f"green-org_alpha-{n}" for n in range(4)
        ]
        assert await greendb.run(lambda: stored("org_bravo")) == [
            f"green-org_bravo-{n}" for n in range(4)
        ]
    finally:

        def clean():
            for schema in ("org_alpha", "org_bravo"):
                with schema_context(schema):
                    Run.objects.filter(orchestrator_slug__startswith="green-").delete()

        await greendb.run(clean)


async def test_an_error_reaches_the_caller_and_the_connection_serves_the_next_call(
    world, committed_db
):
    """A statement's error inside a transaction: the caller gets it, the transaction is rolled
    back, and the wrapper given back (kept, or replaced) serves the next call in a clean state."""

    def fail():
        with schema_context("org_alpha"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1/0")

    for _ in range(3):
        with pytest.raises(Exception, match="division by zero"):
            await greendb.run(fail)

    def state():
        return connection.in_atomic_block, connection.connection.info.transaction_status.name

    assert await greendb.run(state) == (False, "IDLE")
    assert (await greendb.run(_schema_and_backend))[0] == "public"
    pool = greendb._pool()
    assert pool.count == len(pool.idle) <= pool.size


async def test_statements_queued_in_a_pipeline_are_not_handed_to_the_loop(
    world, committed_db, monkeypatch
):
    """A statement queued in a pipeline (cadence_site/pipelined.py) does not block: the green
    call goes on at once instead of switching out to the loop and back; the batch's end, which
    waits for the results, is what the loop waits on."""
    from psycopg import waiting

    from cadence_site.pipelined import pipelined
    from cadence_site.prepared import bound_cursor

    handed: list[int] = []
    real = waiting.wait_async

    def counted(gen, *args, **kwargs):
        handed.append(1)
        return real(gen, *args, **kwargs)

    monkeypatch.setattr(waiting, "wait_async", counted)

    def batch():
        with schema_context("org_alpha"):
            _schema_and_backend()  # connected, its search_path set
            start = len(handed)
            with bound_cursor() as cursor:
                with pipelined():
                    for n in range(5):
                        cursor.execute("SELECT %s::int", [n])
                    inside = len(handed) - start
                return inside, len(handed) - start, cursor.fetchall()

    inside, after, rows = await greendb.run(batch)
    assert inside == 0
    assert after >= 1
    assert rows == [(4,)]


async def test_a_long_pipelined_batch_still_lets_the_loop_serve_others(world, committed_db):
    """Statements queued in a pipeline never block, but a green call that keeps the loop busy
    queuing them for more than psycopg's MAX_BUSY_TIME (5 ms) lets other tasks run meanwhile,
    as psycopg's own waits do."""
    from cadence_site.pipelined import pipelined
    from cadence_site.prepared import bound_cursor

    ticks: list[int] = []
    during: list[int] = []

    async def other_task():
        while True:
            ticks.append(1)
            await asyncio.sleep(0)

    def batch():
        with schema_context("org_alpha"):
            _schema_and_backend()
            with bound_cursor() as cursor:
                with pipelined():
                    start = len(ticks)
                    for n in range(3000):
                        cursor.execute("SELECT %s::int", [n])
                    during.append(len(ticks) - start)

    ticking = asyncio.ensure_future(other_task())
    try:
        await greendb.run(batch)
    finally:
        ticking.cancel()
    assert during[0] > 0


async def test_a_pipelined_batch_past_the_sockets_buffer_lands_from_a_green_call(
    world, committed_db
):
    """6.4 MB of statements written together from a green call, in libpq's pieces (whatever
    the socket takes at a time: a pause waits on the loop); every statement lands."""
    from cadence_site.pipelined import Guarded, write_together

    def batch():
        reports: list = []
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("CREATE TEMP TABLE green_big (id int, v text) ON COMMIT DROP")
            sql = "INSERT INTO green_big VALUES (%s, %s)"
            statements = [Guarded(sql, [n, "p" * 16_000], reports.append) for n in range(400)]
            write_together(lambda: None, statements)
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*), sum(length(v)) FROM green_big")
                return reports, cursor.fetchone()

    reports, row = await greendb.run(batch)
    assert reports == [1] * 400
    assert row == (400, 6_400_000)


async def test_a_backend_killed_while_a_green_batch_is_made_fails_it_and_is_replaced(
    world, committed_db
):
    """The backend is killed while a green call queues its batch: the batch's end raises in
    the call (no wait on the loop for answers that never come), and the pool's next call gets
    a working connection."""
    import time

    import psycopg
    from django.db import DatabaseError

    from cadence_site.pipelined import write_together
    from cadence_site.testing import test_database_url

    def batch():
        pid = _schema_and_backend()[1]

        def send():
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            with psycopg.connect(test_database_url(), autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", [pid])
            time.sleep(0.2)

        with transaction.atomic():
            write_together(send, [], commit=True)

    started = time.monotonic()
    with pytest.raises(DatabaseError):
        await greendb.run(batch)
    assert time.monotonic() - started < 10
    assert (await greendb.run(_schema_and_backend))[0] == "public"


async def test_a_cancelled_caller_leaves_the_call_to_finish(world, committed_db):
    finished = []

    def slow():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.2)")
        finished.append(True)

    caller = asyncio.ensure_future(greendb.run(slow))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    async with asyncio.timeout(10):
        while not finished:  # noqa: ASYNC110 - set by the green call
            await asyncio.sleep(0.01)
    assert finished == [True]
    assert (await greendb.run(lambda: _schema_and_backend()[0])) == "public"


async def test_blocking_runs_on_a_thread_inside_a_green_call_and_in_place_outside(committed_db):
    loop_thread = threading.get_ident()

    inside = await greendb.run(lambda: greendb.blocking(threading.get_ident))

    assert inside != loop_thread
    assert greendb.blocking(threading.get_ident) == loop_thread


async def test_green_calls_wait_for_a_green_lock_on_the_loop_in_the_order_they_came(
    world, committed_db
):
    """Four green calls contend for a GreenLock held across statements: the three that find it
    taken queue on the loop (futures in its queue, no thread each; a `with lock:` on a
    threading.Lock would block the loop's thread, and the holder could never finish: this test
    would then hang), and go in one at a time, in arrival order."""
    lock = greendb.GreenLock()
    order: list[str] = []

    gate = asyncio.get_running_loop().create_future()  # "a" holds the lock until all queue

    def hold(name: str):
        with lock:
            order.append(f"{name} in")
            if name == "a":
                greendb.await_(gate)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(0.02)")
            order.append(f"{name} out")

    first = asyncio.ensure_future(greendb.run(lambda: hold("a")))
    async with asyncio.timeout(10):
        while "a in" not in order:  # noqa: ASYNC110 - set by the green call
            await asyncio.sleep(0.002)
        rest = []
        for name in "bcd":
            rest.append(asyncio.ensure_future(greendb.run(lambda name=name: hold(name))))
            while len(lock._waiters) < len(rest):  # noqa: ASYNC110 - queued on the loop
                await asyncio.sleep(0.001)  # each queues behind the one before
        gate.set_result(None)
        await asyncio.gather(first, *rest)
    assert order == [f"{n} {w}" for n in "abcd" for w in ("in", "out")]
    assert not lock.locked() and not lock._waiters


async def test_a_green_lock_is_shared_fairly_with_a_thread(world, committed_db):
    """A thread holds the GreenLock while a green call waits for it (the release from the
    thread wakes it through the loop), then the green call holds it while the thread waits."""
    lock = greendb.GreenLock()
    order: list[str] = []
    thread_holds = threading.Event()
    release_thread = threading.Event()

    def thread_side():
        with lock:
            order.append("thread in")
            thread_holds.set()
            release_thread.wait(5)
            order.append("thread out")

    worker = threading.Thread(target=thread_side)
    worker.start()
    assert await asyncio.to_thread(thread_holds.wait, 5)

    def green_side():
        with lock:
            order.append("green in")
            _schema_and_backend()
            order.append("green out")

    call = asyncio.ensure_future(greendb.run(green_side))
    async with asyncio.timeout(5):
        while not lock._waiters:  # noqa: ASYNC110 - the green call queues on the loop
            await asyncio.sleep(0.002)
        release_thread.set()
        await call
    await asyncio.to_thread(worker.join, 5)
    assert order == ["thread in", "thread out", "green in", "green out"]
    assert not lock.locked()


async def test_turn_writes_go_to_pool_threads_when_green_calls_are_off(committed_db):
    from engine.runs.pipeline import _db

    loop_thread = threading.get_ident()
    with override_settings(CADENCE_DB_GREEN=False):
        off = await _db(lambda: (threading.get_ident(), greendb.in_green()))
    on = await _db(lambda: (threading.get_ident(), greendb.in_green()))

    assert off[0] != loop_thread and off[1] is False
    assert on == (loop_thread, True)


async def test_connections_go_to_the_calls_that_waited_first():
    """A connection given back goes to the call that has waited longest, not to one that
    arrives as it is given back (which starved some turns of 500 chat sockets for seconds)."""
    pool = greendb._Connections(1)
    held = object()
    pool.count = 1  # `held` is out
    first = asyncio.ensure_future(pool.take())
    await asyncio.sleep(0)
    pool._hand(held)  # as give() does
    late = asyncio.ensure_future(pool.take())  # arrives before `first` has run again
    assert await first is held
    await asyncio.sleep(0)
    assert not late.done()
    pool._hand(held)
    assert await late is held
    assert (pool.count, pool.idle, list(pool.waiting)) == (1, [], [])
