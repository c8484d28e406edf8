"""Attacks on green database calls (cadence_site/greendb.py), on a real PostgreSQL (review).

Each test runs on its own event loop (pytest-asyncio, function scope), so each has a pool of its
own (`greendb._pools[loop]`); `_pool_closed` closes that pool's connections when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
import threading
import time

import psycopg
import pytest
from django.db import connection, connections, transaction
from django_tenants.utils import schema_context

from cadence_site import greendb
from cadence_site.prepared import bound_cursor


@pytest.fixture
async def _pool_closed():
    yield
    pool = greendb._pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        for wrapper in pool.idle:
            await asyncio.to_thread(greendb._close, wrapper)


def _pool() -> greendb._Connections:
    return greendb._pools[asyncio.get_running_loop()]


def _one(sql: str, params=None):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def _conninfo() -> str:
    settings = connections.settings["default"]
    return psycopg.conninfo.make_conninfo(
        dbname=connection.settings_dict["NAME"],
        user=settings.get("USER") or None,
        host=settings.get("HOST") or None,
        port=settings.get("PORT") or None,
    )


class _Ticker:
    """A task on the loop noting the time every 10 ms: a loop that stops shows as a gap."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self.ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def stop(self) -> list[float]:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        return self.ticks

    def largest_gap(self) -> float:
        return max(b - a for a, b in zip(self.ticks, self.ticks[1:], strict=False))


async def _settled(pool: greendb._Connections, seconds: float = 5) -> None:
    """Until every connection the pool counts is back among its idle ones."""
    async with asyncio.timeout(seconds):
        while len(pool.idle) != pool.count:  # noqa: ASYNC110 - no event to wait for
            await asyncio.sleep(0.01)


# --- 1. tenant isolation ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_interleaved_calls_each_see_their_own_schema(
    world, committed_db, _pool_closed, monkeypatch
):
    """Twenty calls on three connections, half in alpha and half in bravo, every statement
    followed by a real wait (the loop switches to the others then), with Django cursors and
    prepared statements; every third call fails inside an atomic block after entering the other
    organization there (rolled back on a connection the next call reuses)."""
    monkeypatch.setenv("CADENCE_DB_GREEN_CONNECTIONS", "3")
    seen: list[tuple[str, str]] = []

    def call(index: int) -> None:
        mine = "org_alpha" if index % 2 else "org_bravo"
        other = "org_bravo" if index % 2 else "org_alpha"
        with schema_context(mine):
            for round_ in range(3):
                schema = _one("SELECT current_schema() FROM pg_sleep(0.003)")[0]
                seen.append((mine, schema))
                with bound_cursor() as cursor:
                    cursor.execute("SELECT %s::text || current_schema()", [f"{round_}:"])
                    seen.append((f"{round_}:{mine}", cursor.fetchone()[0]))
                if index % 3 == 0 and round_ == 1:
                    with pytest.raises(ZeroDivisionError):
                        with transaction.atomic():
                            with schema_context(other):
                                seen.append((other, _one("SELECT current_schema()")[0]))
                                _one("SELECT pg_sleep(0.002)")
                            _one("SELECT pg_sleep(0.002)")
                            raise ZeroDivisionError
                    seen.append((mine, _one("SELECT current_schema()")[0]))

    await asyncio.gather(*(greendb.run(lambda i=i: call(i)) for i in range(20)))
    wrong = [(wanted, got) for wanted, got in seen if wanted != got]
    assert len(seen) > 20 * 6
    assert wrong == []
    assert _pool().count == 3  # the connections were shared by the calls


@pytest.mark.asyncio
async def test_green_calls_leave_the_threads_connection_alone(world, committed_db, _pool_closed):
    """The loop thread's own Django connection (its thread storage) is the same object after
    green calls, and a call's wrapper is never it."""
    storage = connections._connections._storage
    before = getattr(storage, "default", None)

    def call():
        return connections["default"]

    used = await greendb.run(lambda: (call(), _one("SELECT 1"))[0])
    assert used is not before
    assert getattr(storage, "default", None) is before


# --- 2. cancellation ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_cancelled_caller_leaves_the_call_to_finish(world, committed_db, _pool_closed):
    finished = []

    def slow():
        with schema_context("org_alpha"):
            _one("SELECT pg_sleep(0.3)")
            finished.append(_one("SELECT current_schema()")[0])

    task = asyncio.ensure_future(greendb.run(slow))
    await asyncio.sleep(0.1)
    assert task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == []  # still in pg_sleep when its caller went
    pool = _pool()
    await _settled(pool)
    assert finished == ["org_alpha"]
    assert (pool.count, len(pool.idle)) == (1, 1)
    wrapper = pool.idle[0]
    assert wrapper.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    # The same connection serves the next call, in whichever schema it asks for.
    with_bravo = await greendb.run(lambda: _schema_of("org_bravo"))
    assert with_bravo == "org_bravo"
    assert pool.idle == [wrapper]


def _schema_of(schema_name: str) -> str:
    with schema_context(schema_name):
        return _one("SELECT current_schema()")[0]


# --- 3. a backend killed mid-call ---------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("atomic", [False, True])
async def test_a_killed_backend_fails_its_call_and_is_replaced(
    world, committed_db, _pool_closed, atomic
):
    from django.db import Error

    pids: list[int] = []

    def victim():
        with schema_context("org_alpha"):
            pids.append(_one("SELECT pg_backend_pid()")[0])
            if atomic:
                with transaction.atomic():
                    _one("SELECT pg_sleep(5)")
            else:
                _one("SELECT pg_sleep(5)")

    task = asyncio.ensure_future(greendb.run(victim))
    async with asyncio.timeout(5):
        while not pids:  # noqa: ASYNC110 - set by the green call
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)

    def kill():
        with psycopg.connect(_conninfo(), autocommit=True) as other:
            return other.execute("SELECT pg_terminate_backend(%s)", [pids[0]]).fetchone()[0]

    assert await asyncio.to_thread(kill)
    started = time.monotonic()
    with pytest.raises(Error):
        async with asyncio.timeout(4):
            await task
    assert time.monotonic() - started < 2
    pool = _pool()
    # The broken connection was not kept (inside an atomic block, Django's exit of it opened
    # another on the same wrapper: a working one may be).
    assert pool.count == len(pool.idle) <= 1
    assert all(not w.connection.closed for w in pool.idle)
    pid = await greendb.run(lambda: _one("SELECT pg_backend_pid()")[0])
    assert pid != pids[0]
    assert await greendb.run(lambda: _schema_of("org_bravo")) == "org_bravo"
    assert pool.count == 1


@pytest.mark.asyncio
async def test_a_connection_opened_again_inside_a_call_does_not_stop_the_loop(
    world, committed_db, _pool_closed
):
    """The backend is killed inside an atomic block: Django's exit of the block drops the
    connection and opens another (to restore autocommit), inside the green call. The database
    is now a server that takes the connection and never answers (a failover in progress): that
    opening must wait off the loop, not freeze every other request for its connect_timeout."""
    from django.db import Error

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    pids: list[int] = []

    def victim():
        with schema_context("org_alpha"):
            pids.append(_one("SELECT pg_backend_pid()")[0])
            # Where this wrapper connects from now on.
            connection.settings_dict["HOST"] = "127.0.0.1"
            connection.settings_dict["PORT"] = str(silent.getsockname()[1])
            connection.settings_dict["OPTIONS"] = {
                **connection.settings_dict["OPTIONS"],
                "connect_timeout": 2,
            }
            with transaction.atomic():
                _one("SELECT pg_sleep(5)")

    try:
        task = asyncio.ensure_future(greendb.run(victim))
        async with asyncio.timeout(5):
            while not pids:  # noqa: ASYNC110 - set by the green call
                await asyncio.sleep(0.01)
        ticker = _Ticker()
        await asyncio.sleep(0.05)
        assert await asyncio.to_thread(_terminate, pids[0])
        with pytest.raises(Error):
            async with asyncio.timeout(8):
                await task
        await ticker.stop()
    finally:
        silent.close()
    assert ticker.largest_gap() < 0.5
    pool = _pool()
    assert (pool.count, pool.idle) == (0, [])
    assert await greendb.run(lambda: _schema_of("org_bravo")) == "org_bravo"


def _terminate(pid: int) -> bool:
    with psycopg.connect(_conninfo(), autocommit=True) as other:
        return other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]


# --- 4. the connection limit --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_never_more_connections_than_the_limit(
    world, committed_db, _pool_closed, monkeypatch
):
    monkeypatch.setenv("CADENCE_DB_GREEN_CONNECTIONS", "2")
    state = {"now": 0, "most": 0, "backends": 0}
    pids: set[int] = set()
    application = "greendb-review-limit"

    def call() -> None:
        state["now"] += 1
        state["most"] = max(state["most"], state["now"])
        try:
            pid = _one("SELECT pg_backend_pid()")[0]
            pids.add(pid)
            _one("SELECT set_config('application_name', %s, false)", [application])
            _one("SELECT pg_sleep(0.03)")
            count = _one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                [application],
            )[0]
            state["backends"] = max(state["backends"], count)
        finally:
            state["now"] -= 1

    async with asyncio.timeout(10):
        await asyncio.gather(*(greendb.run(call) for _ in range(10)))
    assert state["most"] == 2  # concurrent, and never more than two at once
    assert len(pids) == 2
    assert state["backends"] <= 2
    assert _pool().count == 2


@pytest.mark.asyncio
async def test_a_failed_connect_wakes_the_calls_waiting_for_a_connection(
    world, committed_db, _pool_closed, monkeypatch
):
    """With one connection allowed, a call waits while another opens it; when the database
    refuses that connection, the waiting call must try for itself (and fail as promptly), not
    wait for a connection that will never be given back."""
    from django.db import OperationalError

    monkeypatch.setenv("CADENCE_DB_GREEN_CONNECTIONS", "1")
    refused = {**connections.settings["default"], "NAME": "greendb_review_no_such_database"}
    monkeypatch.setitem(connections.settings, "default", refused)
    calls = [asyncio.ensure_future(greendb.run(lambda: _one("SELECT 1"))) for _ in range(3)]
    async with asyncio.timeout(5):
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(result, OperationalError) for result in results), results
    assert _pool().count == 0
    monkeypatch.undo()
    assert await greendb.run(lambda: _one("SELECT 1")[0]) == 1


# --- 5. a lock held across statements -----------------------------------------------------------


def test_two_calls_contending_for_a_lock_do_not_stop_the_loop(world, committed_db):
    """On a loop of its own in a thread: were the waiter to block the loop's thread on the lock,
    the holder (waiting on the loop for its statement) would never release it; the thread is
    then stuck for good, and this test says so instead of hanging."""
    lock = greendb.GreenLock()
    order: list[str] = []

    def holder(name: str) -> None:
        with lock:
            order.append(f"{name} in")
            _one("SELECT pg_sleep(0.1)")
            order.append(f"{name} out")

    async def scenario() -> None:
        try:
            first = asyncio.ensure_future(greendb.run(lambda: holder("a")))
            # "a" holds the lock, waiting in pg_sleep (its connection is opened first: under
            # load that took longer than a fixed 30 ms, and "b" came first).
            async with asyncio.timeout(5):
                while "a in" not in order:  # noqa: ASYNC110 - set by the green call
                    await asyncio.sleep(0.005)
            await asyncio.gather(first, greendb.run(lambda: holder("b")))
        finally:
            for wrapper in greendb._pools.pop(asyncio.get_running_loop()).idle:
                await asyncio.to_thread(greendb._close, wrapper)

    errors: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(scenario())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the loop is stuck: a lock taken on its thread"
    assert errors == []
    assert order == ["a in", "a out", "b in", "b out"]
    assert not lock.locked()


def test_a_green_call_waiting_for_a_lock_when_its_loop_closes_passes_its_wake_on(
    world, committed_db
):
    """A green call queued for a GreenLock is cancelled (its loop shuts down): it leaves the
    queue, and a release that had already picked it wakes the next waiter instead, so nobody
    waits for a release that went to a call that is gone."""
    lock = greendb.GreenLock()
    lock.acquire()  # held by this thread
    queued = threading.Event()

    async def scenario():
        def wait_for_lock():
            with lock:
                pass

        asyncio.ensure_future(greendb.run(wait_for_lock))
        async with asyncio.timeout(5):
            while not lock._waiters:  # noqa: ASYNC110 - the green call queues on the loop
                await asyncio.sleep(0.002)
        queued.set()
        try:
            await asyncio.sleep(0.05)
        finally:
            for wrapper in greendb._pools.pop(asyncio.get_running_loop()).idle:
                await asyncio.to_thread(greendb._close, wrapper)

    errors: list[BaseException] = []

    def main():
        try:
            asyncio.run(scenario())  # cancels the green call's task at its end
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert queued.wait(5)
    thread.join(10)
    assert not thread.is_alive() and errors == []
    assert not lock._waiters  # the cancelled call left the queue
    lock.release()
    assert lock._lock.acquire(blocking=False)  # free, and nothing was left waiting for it
    lock._lock.release()


# --- 6. the loop keeps serving ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_loop_serves_others_while_a_call_waits(world, committed_db, _pool_closed):
    await greendb.run(lambda: _one("SELECT 1"))  # connected: no connect in what is measured
    ticker = _Ticker()
    await asyncio.sleep(0.02)
    started = time.monotonic()
    await greendb.run(lambda: _one("SELECT pg_sleep(0.5)"))
    elapsed = time.monotonic() - started
    ticks = await ticker.stop()
    during = [t for t in ticks if started <= t <= started + elapsed]
    assert elapsed >= 0.5
    assert len(during) >= 20
    assert ticker.largest_gap() < 0.2


@pytest.mark.asyncio
async def test_blocking_work_runs_off_the_loop(world, committed_db, _pool_closed):
    ticker = _Ticker()
    await asyncio.sleep(0.02)
    threads = await greendb.run(
        lambda: (greendb.blocking(time.sleep, 0.3), greendb.blocking(threading.get_ident))[1]
    )
    await ticker.stop()
    assert threads != threading.get_ident()
    assert ticker.largest_gap() < 0.15


# --- 7. context variables -----------------------------------------------------------------------

_var: contextvars.ContextVar[str] = contextvars.ContextVar("greendb_review", default="unset")


@pytest.mark.asyncio
async def test_context_goes_in_and_does_not_come_out(world, committed_db, _pool_closed):
    _var.set("caller")

    def call() -> tuple[str, str]:
        seen = _var.get()
        _var.set("inside")
        _one("SELECT pg_sleep(0.01)")  # a switch to the loop and back
        in_thread = greendb.blocking(_var.get)
        return seen, in_thread

    assert await greendb.run(call) == ("caller", "inside")
    assert _var.get() == "caller"

    # Two concurrent calls do not see each other's.
    def own(value: str) -> str:
        _var.set(value)
        _one("SELECT pg_sleep(0.02)")
        return _var.get()

    assert await asyncio.gather(greendb.run(lambda: own("x")), greendb.run(lambda: own("y"))) == [
        "x",
        "y",
    ]
    assert _var.get() == "caller"


# --- what green code may not assume: a running loop ---------------------------------------------


@pytest.mark.asyncio
async def test_a_line_logged_in_a_call_reaches_the_run_on_its_loop(
    world, committed_db, _pool_closed
):
    """A run's log binding delivers its lines on the run's loop (RunRecorder.log -> its live
    publisher's kick -> the loop's sender: asyncio.get_running_loop()). A green call is on the
    loop's thread with no running loop: a line it logs while the run is bound (its row written
    by `_start`, a checkpoint saved) must still be delivered on the loop, not lost to the
    RuntimeError of a loop-bound deliver (the publisher then left marked queued, never sent)."""
    import logging

    from engine.runs import runlog

    loop = asyncio.get_running_loop()
    delivered: list[tuple[str, object]] = []

    def deliver(entry):
        delivered.append((entry["message"], asyncio.get_running_loop()))

    token = runlog.bind(runlog.RunLogBinding(deliver))
    try:

        def call():
            _one("SELECT 1")
            logging.getLogger("cadence.greendb_review").warning("from a green call")
            _one("SELECT 1")

        await greendb.run(call)
        await asyncio.sleep(0.01)
    finally:
        runlog.unbind(token)
    assert delivered == [("from a green call", loop)]
