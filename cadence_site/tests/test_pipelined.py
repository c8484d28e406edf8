"""Statements sent together (cadence_site/pipelined.py): one round trip for a batch and its
guarded statements; a guarded statement the database refuses is rolled back alone, reported and
logged, and the rest of the transaction stands; a failure before them fails the batch."""

from __future__ import annotations

import logging
import time

import pytest
from django.db import DatabaseError, connection, transaction

from cadence_site.pipelined import Guarded, write_together
from cadence_site.prepared import bound_cursor
from cadence_site.testing import test_database_url


@pytest.fixture
def table(committed_db):
    """A scratch table, in real transactions (committed_db: the BEGIN is one of the statements
    sent together), that another connection can read."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TABLE IF EXISTS public.pipelined_t;"
            " CREATE TABLE public.pipelined_t (id int PRIMARY KEY, v varchar(3))"
        )
    yield "public.pipelined_t"
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE public.pipelined_t")


def _other():
    """Another connection to the test database, in autocommit."""
    import psycopg

    return psycopg.connect(test_database_url(), autocommit=True)


def _committed(table: str) -> list[tuple]:
    """What another connection sees of `table`: what is committed."""
    with _other() as other:
        return other.execute(f"SELECT id, v FROM {table} ORDER BY id").fetchall()


def _rows(table: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, v FROM {table} ORDER BY id")
        return cursor.fetchall()


def _insert(table: str, *values) -> None:
    with bound_cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} VALUES (%s, %s)", list(values))


def _guarded(table: str, reports: list, *values, conflict: bool = False) -> Guarded:
    sql = f"INSERT INTO {table} VALUES (%s, %s)"
    if conflict:
        sql += " ON CONFLICT (id) DO NOTHING"
    return Guarded(sql, list(values), reports.append, what=f"row {values[0]}")


def test_a_batch_and_its_guarded_statements_are_sent_together(table):
    """Queued, not sent and waited for one by one: inside the batch a statement's row count is
    not known yet (psycopg's pipeline mode); each guarded statement's is reported after it."""
    from psycopg import pq

    reports: list = []
    seen: list = []
    with transaction.atomic():

        def send() -> None:
            seen.append(connection.connection.pgconn.pipeline_status)
            with bound_cursor() as cursor:
                seen.append(cursor.execute(f"INSERT INTO {table} VALUES (1, 'a')").rowcount)
            _insert(table, 2, "b")

        write_together(
            send,
            [_guarded(table, reports, 3, "c"), _guarded(table, reports, 1, "z", conflict=True)],
        )
        assert seen == [pq.PipelineStatus.ON, -1]
        assert connection.connection.pgconn.pipeline_status == pq.PipelineStatus.OFF
        assert reports == [1, 0]  # each statement's rows, read once the batch is back
    assert _rows(table) == [(1, "a"), (2, "b"), (3, "c")]


def test_nothing_of_a_batch_reaches_the_server_before_its_end(table):
    """The statements are buffered, not written one by one as psycopg's pipeline does: while
    the batch is being made, the server's backend has received none of it (its last statement,
    as another connection sees it, is still the one before the batch), and the batch's outcome
    is all there once it ends."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid() /* before the batch */")
        pid = cursor.fetchone()[0]
    seen: list[str] = []

    def last_statement() -> str:
        with _other() as other:
            return other.execute(
                "SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]
            ).fetchone()[0]

    def send() -> None:
        for n in range(1, 4):
            _insert(table, n, "a")
        deadline = time.monotonic() + 0.3  # time enough for a written statement to show
        while time.monotonic() < deadline:
            seen.append(last_statement())
            time.sleep(0.05)

    reports: list = []
    with transaction.atomic():
        write_together(send, [_guarded(table, reports, 4, "d")], commit=True)
    assert set(seen) == {"SELECT pg_backend_pid() /* before the batch */"}
    assert reports == [1]
    assert _committed(table) == [(1, "a"), (2, "a"), (3, "a"), (4, "d")]
    assert "COMMIT" in last_statement()


def test_a_refused_guarded_statement_is_rolled_back_alone_and_those_after_it_are_written(
    table, caplog
):
    reports: list = []
    with transaction.atomic():

        def send() -> None:
            _insert(table, 1, "a")

        with caplog.at_level(logging.ERROR, logger="cadence_site.pipelined"):
            write_together(
                send,
                [
                    _guarded(table, reports, 2, "b"),
                    _guarded(table, reports, 3, "too long"),  # varchar(3): refused
                    _guarded(table, reports, 4, "d"),
                ],
            )
        assert reports == [1, None, 1]
        assert _rows(table) == [(1, "a"), (2, "b"), (4, "d")]
        _insert(table, 5, "e")  # the transaction goes on
    assert _rows(table) == [(1, "a"), (2, "b"), (4, "d"), (5, "e")]
    assert [r.getMessage() for r in caplog.records] == ["row 3 not written"]


def test_the_reports_name_each_statements_outcome_in_order(table):
    outcomes: dict = {}

    def report(name):
        return lambda rows: outcomes.__setitem__(name, rows)

    sql = f"INSERT INTO {table} VALUES (%s, %s)"
    with transaction.atomic():
        write_together(
            lambda: None,
            [
                Guarded(sql, [1, "a"], report("first")),
                Guarded(sql, [1, "b"], report("duplicate")),  # the primary key: refused
                Guarded(sql, [2, "c"], report("last")),
            ],
        )
    assert outcomes == {"first": 1, "duplicate": None, "last": 1}
    assert _rows(table) == [(1, "a"), (2, "c")]


def test_a_failure_before_the_guarded_statements_fails_the_batch(table):
    reports: list = []

    def send() -> None:
        _insert(table, 1, "a")
        _insert(table, 1, "a")  # the primary key: refused

    with pytest.raises(DatabaseError), transaction.atomic():
        write_together(send, [_guarded(table, reports, 2, "b")])
    assert reports == [None]  # told: not written
    assert _rows(table) == []


def test_a_report_that_raises_is_logged_and_the_others_still_run(table, caplog):
    reports: list = []

    def broken(rows):
        raise RuntimeError("the caller's bug")

    sql = f"INSERT INTO {table} VALUES (%s, %s)"
    with transaction.atomic(), caplog.at_level(logging.ERROR, logger="cadence_site.pipelined"):
        write_together(
            lambda: None,
            [Guarded(sql, [1, "a"], broken, what="row 1"), _guarded(table, reports, 2, "b")],
        )
    assert reports == [1]
    assert [r.getMessage() for r in caplog.records] == ["reporting row 1 failed"]


def test_outside_a_transaction_it_refuses(committed_db):
    with pytest.raises(RuntimeError, match="outside a transaction"):
        write_together(lambda: None, [])


def test_with_commit_the_transaction_is_begun_and_committed_in_the_batch(table):
    """`commit`: committed before the atomic block ends (another connection sees the rows);
    what the block sends afterwards goes in a transaction of its own, which the block commits,
    and its on_commit callbacks run when it does."""
    reports: list = []
    ran: list = []
    with transaction.atomic():
        assert write_together(
            lambda: _insert(table, 1, "a"), [_guarded(table, reports, 2, "b")], commit=True
        )
        assert _committed(table) == [(1, "a"), (2, "b")]
        assert connection.connection.autocommit is False  # as Django's block left it
        _insert(table, 3, "c")
        transaction.on_commit(lambda: ran.append(_committed(table)))
        assert _committed(table) == [(1, "a"), (2, "b")]
    assert ran == [[(1, "a"), (2, "b"), (3, "c")]]
    assert reports == [1]


def test_with_commit_a_refused_guarded_statement_leaves_the_rest_committed(table, caplog):
    reports: list = []
    with transaction.atomic(), caplog.at_level(logging.ERROR, logger="cadence_site.pipelined"):
        assert write_together(
            lambda: _insert(table, 1, "a"),
            [
                _guarded(table, reports, 2, "too long"),
                _guarded(table, reports, 3, "c"),
            ],
            commit=True,
        )
        assert _committed(table) == [(1, "a"), (3, "c")]
    assert reports == [None, 1]
    assert [r.getMessage() for r in caplog.records] == ["row 2 not written"]


def test_with_commit_a_failure_rolls_back_and_the_connection_stays_usable(table):
    reports: list = []

    def send() -> None:
        _insert(table, 1, "a")
        _insert(table, 1, "a")  # refused

    with pytest.raises(DatabaseError), transaction.atomic():
        write_together(send, [_guarded(table, reports, 2, "b")], commit=True)
    assert reports == [None] and _committed(table) == []
    assert connection.connection.autocommit is True  # Django's, out of any block
    with pytest.raises(RuntimeError, match="undone"), transaction.atomic():
        _insert(table, 4, "d")
        raise RuntimeError("undone")
    assert _committed(table) == []  # the block's transaction was one: rolled back


def test_with_commit_after_something_was_sent_the_block_commits(table):
    with transaction.atomic():
        _insert(table, 1, "a")  # the transaction has begun
        assert write_together(lambda: _insert(table, 2, "b"), [], commit=True) is False
        assert _committed(table) == []
    assert _committed(table) == [(1, "a"), (2, "b")]


def test_a_statement_with_commit_is_sent_only_in_a_batch_that_commits(table):
    """`with_commit`: an UPSERT of a shared row is not left locked until someone else's commit:
    in a batch that does not commit it is not sent, and told so (None)."""
    reports: list = []
    held = _guarded(table, reports, 2, "b")
    held.with_commit = True
    with transaction.atomic():
        _insert(table, 1, "a")  # begun already: the block commits, not the batch
        assert write_together(lambda: None, [held], commit=True) is False
    assert reports == [None] and _committed(table) == [(1, "a")]

    held = _guarded(table, reports, 2, "b")
    held.with_commit = True
    with transaction.atomic():
        assert write_together(lambda: None, [held], commit=True) is True
    assert reports == [None, 1] and _committed(table) == [(1, "a"), (2, "b")]


def test_with_commit_inside_an_outer_block_the_outer_block_decides(table):
    """Nothing sent yet, but the block is not the outermost (no savepoint of its own either):
    the batch does not commit, and the outer block's rollback undoes it."""
    with pytest.raises(RuntimeError, match="outer"), transaction.atomic():
        with transaction.atomic(savepoint=False):
            assert write_together(lambda: _insert(table, 1, "a"), [], commit=True) is False
        raise RuntimeError("the outer block fails")
    assert _committed(table) == []


def test_a_batch_larger_than_the_buffers_goes_whole(table):
    """A batch past libpq's output threshold (64 kB) and the sockets' buffers: written in
    pieces, the server's answers read meanwhile; every statement lands and is reported."""
    reports: list = []
    padding = "p" * 4000  # each statement's values ~4 kB: 1.6 MB in all
    sql = f"INSERT INTO {table} SELECT %s, %s WHERE length(%s) > 0"
    statements = [Guarded(sql, [n, "x", padding], reports.append) for n in range(1, 401)]
    with transaction.atomic():
        write_together(lambda: None, statements, commit=True)
    assert reports == [1] * 400
    assert len(_committed(table)) == 400


def test_a_fetch_inside_the_block_sends_what_is_queued(table):
    """A statement whose result is read inside the block: what was queued before it is sent
    then (one round trip more), in order, and the block goes on."""
    from cadence_site.pipelined import pipelined

    with transaction.atomic():
        with pipelined(), bound_cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} VALUES (1, 'a')")
            cursor.execute(f"SELECT count(*) FROM {table}")
            assert cursor.fetchone() == (1,)
            cursor.execute(f"INSERT INTO {table} VALUES (2, 'b')")
    assert _rows(table) == [(1, "a"), (2, "b")]


def test_a_connection_lost_before_the_batch_is_sent_fails_it_without_a_hang(table):
    """The backend is killed while the batch is being made (nothing of it sent yet): its end
    raises (no wait for answers that never come), nothing is written, and the next statement
    gets a new connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    reports: list = []

    def send() -> None:
        _insert(table, 1, "a")
        with _other() as other:
            other.execute("SELECT pg_terminate_backend(%s)", [pid])
        time.sleep(0.2)  # the backend gone before the batch is written

    started = time.monotonic()
    with pytest.raises(DatabaseError), transaction.atomic():
        write_together(send, [_guarded(table, reports, 2, "b")], commit=True)
    assert time.monotonic() - started < 10
    assert reports == [None]
    assert _committed(table) == []
    assert _rows(table) == []  # a new connection


def test_a_statement_libpq_refuses_fails_the_batch_without_a_hang(table):
    """libpq refuses a statement as it is buffered (more than 65,535 values, prepared on first
    use: its Parse is buffered, its Execute is not, nor the block's sync after it): the batch
    fails at once instead of waiting at its end for answers the server was never asked to send,
    and the connection serves the next statement. In a thread with a deadline: a hang must fail
    the test, not stop the suite."""
    import threading

    from cadence_site.pipelined import pipelined

    sql = "SELECT " + ", ".join(["%s::int"] * 70_000)
    outcome: dict = {}

    def batch() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                outcome["pid"] = cursor.fetchone()[0]
            try:
                with pipelined(), bound_cursor() as cursor:
                    cursor.execute(f"INSERT INTO {table} VALUES (1, 'a')")
                    cursor.execute(sql, list(range(70_000)))
            except DatabaseError as exc:
                outcome["error"] = exc
            outcome["after"] = _rows(table)
        finally:
            connection.close()

    worker = threading.Thread(target=batch, daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # its backend ended, or the table's teardown would wait on it too
        with _other() as other:
            other.execute("SELECT pg_terminate_backend(%s)", [outcome["pid"]])
    assert not worker.is_alive(), "the batch's end waits forever"
    assert "65535" in str(outcome["error"])
    assert "after" in outcome  # the next statement was served
