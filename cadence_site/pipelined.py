"""Statements sent to PostgreSQL together: one round trip for a batch whose results come after.

A turn's database work is a handful of statements, and each round trip costs the server more than
most of them do: measured on a streamed /v1 load, five extra `SELECT 1` round trips in a turn's
write cost 0.7-1.2 ms of server CPU per turn (a wait handed to the loop, its wake-up, a cursor),
against ~3.4 ms for the whole turn. `pipelined()` sends the statements made inside it with
psycopg's pipeline mode: queued, then sent and read at the block's end, in one write to the
socket. (psycopg's own pipeline writes each statement to the socket as it is made, two readiness
polls and a send each: 11 writes and 24 polls for a streamed turn's outcome, each write waking the
database's backend for a fraction of the batch; `_Deferred` keeps them in libpq's buffer until
results are wanted. psycopg sends the BEGIN of a transaction that the block opens in a round trip
of its own: `write_together`'s `commit` sends its own BEGIN and COMMIT in the batch instead.)

`write_together(send, statements, commit=...)` writes `send()`'s statements and then each
`Guarded` statement in a savepoint of its own, in one round trip: a guarded statement that the
database refuses is rolled back to its savepoint, logged and reported to its `done` (None), and
what came before it stands, as a savepoint around each would do statement by statement. The
run's outcome, its steps, its execution proof and its usage are written so
(engine/runs/recorder.py `finish`).

Inside `pipelined()`, a cursor's `rowcount` reads -1 until the block ends, and a fetch sends what
is queued and waits (one more round trip, correct all the same): only statements whose results
nobody needs before the end belong there; Django's ORM (which reads `rowcount` after an UPDATE)
does not. An error raises at the end of the block, or at a later statement of it when psycopg
reads the failure's result early, as Django's DatabaseError; PostgreSQL skips the statements
after the failing one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections
from psycopg import generators, pq

from cadence_site.prepared import bound_cursor, enabled, open_bound

logger = logging.getLogger(__name__)

_SAVEPOINT = "cadence_guarded"


@dataclass
class Guarded:
    """A statement written with others that must not fail them (see the module docstring).
    `done` is told, once, the rows it wrote, or None when it wrote nothing: the database refused
    it (logged here), the batch failed before it, or it was not sent. `with_commit`: sent only
    in a batch that commits (a statement whose row locks must not be held past the batch, as
    an UPSERT of a row every concurrent writer shares); reported None otherwise."""

    sql: str
    params: Sequence[Any]
    done: Callable[[int | None], None]
    what: str = "a guarded statement"
    with_commit: bool = False


class _Deferred(psycopg.Pipeline):
    """psycopg's pipeline, its commands put in libpq's output buffer as they are made and written
    to the socket only when results are wanted: a fetch, a sync, the block's end.

    psycopg calls `_communicate_gen` after each command to write it (and read any result come
    back); here that only buffers it. libpq writes a buffer grown past its threshold (64 kB) by
    itself, without blocking (the connection is non-blocking in pipeline mode), so a large batch
    still goes out in pieces; what the server answers meanwhile waits in the socket until the
    fetch, which reads while it writes (psycopg's `send`), so neither side can stall the other."""

    def _communicate_gen(self):
        self._buffer()
        return
        yield  # a generator, as psycopg's

    def _buffer(self) -> None:
        commands = self.command_queue
        while commands:
            commands.popleft()()

    def _exit_gen(self):
        # psycopg's, without its flush request once the sync is buffered (it makes the server
        # send what it has). A command libpq refused as it was buffered (more than 65,535
        # values) leaves the rest, the sync with them, unbuffered: then the flush request, or
        # the results of what went before it would be waited for forever.
        try:
            self._enqueue_sync()
            self._buffer()
        finally:
            refused = bool(self.command_queue)
            self.command_queue.clear()
            yield from self._fetch_gen(flush=refused)

    def _fetch_gen(self, *, flush: bool):
        self._buffer()
        if not self.result_queue:
            return
        if flush:
            self.pgconn.send_flush_request()
        yield from generators.send(self.pgconn)  # what is buffered: no write when nothing is
        yield from super()._fetch_gen(flush=False)


@contextmanager
def _deferred(raw: psycopg.Connection) -> Iterator[None]:
    """`raw.pipeline()` (psycopg's, whose bookkeeping this follows) with a `_Deferred` pipeline;
    inside another pipeline block, that block's pipeline."""
    with raw.lock:
        raw._check_connection_ok()
        if (pipeline := raw._pipeline) is None:
            pipeline = raw._pipeline = _Deferred(raw)
    try:
        with pipeline:
            yield
    finally:
        if pipeline.level == 0:
            with raw.lock:
                raw._pipeline = None


@contextmanager
def pipelined() -> Iterator[None]:
    """The statements sent inside go to PostgreSQL together at its end (see the module
    docstring)."""
    db = connections[DEFAULT_DB_ALIAS]
    db.ensure_connection()
    with db.wrap_database_errors, _deferred(db.connection):
        yield


def write_together(
    send: Callable[[], None], statements: Sequence[Guarded], *, commit: bool = False
) -> bool:
    """`send()`'s statements, then each of `statements` in a savepoint, in one round trip, in the
    caller's transaction (see the module docstring). An error in what `send()` sends raises (the
    guarded statements are not written); one in a guarded statement does not.

    `commit`: when nothing has been sent in the caller's transaction yet (and its atomic block
    is the outermost), it is begun and committed in that same round trip (psycopg would
    otherwise send its BEGIN, and Django its COMMIT, in round trips of their own); True when it
    was. The caller's atomic block then ends
    with nothing left to commit; its on_commit callbacks run as they would. What the caller
    sends after this, still in its block, goes in a transaction of its own. An error rolls the
    transaction back before it raises."""
    db = connections[DEFAULT_DB_ALIAS]
    if not db.in_atomic_block:
        raise RuntimeError("write_together() outside a transaction: nothing to roll back to")
    raw = None
    if commit and len(db.atomic_blocks) == 1:  # an outer block would commit it, not this one
        db.ensure_connection()
        raw = db.connection
        if raw.autocommit or raw.info.transaction_status != pq.TransactionStatus.IDLE:
            raw = None  # begun already (or not Django's): the caller's block commits
        else:
            # BEGIN and COMMIT are ours: psycopg sends no BEGIN of its own (with a sync).
            raw.autocommit = True
    if raw is None:
        held = [statement for statement in statements if statement.with_commit]
        statements = [statement for statement in statements if not statement.with_commit]
    else:
        held = []
    cursors: list[Any] = []
    commands = None
    reported = 0  # statements[:reported] have been told
    try:
        try:
            with pipelined():
                # One cursor for the batch's commands (their results are not read).
                commands = open_bound()
                if raw is not None:
                    commands.execute("BEGIN", prepare=False)
                send()
                for statement in statements:
                    cursors.append(_send(statement, commands))
                if raw is not None:
                    commands.execute("COMMIT", prepare=False)
        except Exception:
            if not _back_to_savepoint():
                if raw is not None:
                    _rollback()
                raise  # the failure was in `send()`: the caller's transaction is broken
            # The first without a result (one that failed while being queued has no cursor).
            failed = next((i for i, c in enumerate(cursors) if not _wrote(c)), len(cursors))
            if failed >= len(statements):
                if raw is not None:
                    _rollback()
                raise  # every guarded statement wrote: the error is not theirs
            logger.exception("%s not written", statements[failed].what)
            rows: list[int | None] = [cursor.rowcount for cursor in cursors[:failed]] + [None]
            # Those after it were not run (PostgreSQL skips the rest of a failed batch): alone.
            rows += [_write_alone(statement) for statement in statements[failed + 1 :]]
            if raw is not None:
                _command("COMMIT")
            reported = len(statements)
            for statement, written in zip(statements, rows, strict=True):
                _report(statement, written)
            return raw is not None
        reported = len(statements)
        for statement, cursor in zip(statements, cursors, strict=True):
            _report(statement, cursor.rowcount)
        return raw is not None
    finally:
        for statement in [*statements[reported:], *held]:
            _report(statement, None)  # not written: the batch failed, or they were not sent
        for cursor in [*cursors, commands] if commands is not None else cursors:
            cursor.close()
        if raw is not None and not raw.closed:
            if raw.info.transaction_status != pq.TransactionStatus.IDLE:
                _rollback()  # a failure while recovering: nothing half done is left open
            try:
                raw.autocommit = False  # as Django's atomic block set it
            except Exception:
                # Left in autocommit, Django's next transactions on it would not be: closed.
                logger.warning("a batch's connection could not be restored", exc_info=True)
                raw.close()


def _rollback() -> None:
    raw = connections[DEFAULT_DB_ALIAS].connection
    try:
        raw.execute("ROLLBACK", prepare=False)
    except Exception:
        logger.warning("rolling back a batch's transaction failed", exc_info=True)


def _send(statement: Guarded, commands: Any) -> Any:
    """SAVEPOINT, the statement (prepared, on a cursor of its own: its row count is read after
    the batch) and RELEASE, queued; the savepoint's commands on `commands`."""
    commands.execute(f"SAVEPOINT {_SAVEPOINT}", prepare=False)
    cursor = open_bound()
    try:
        cursor.execute(statement.sql, statement.params, prepare=enabled())
    except BaseException:
        cursor.close()
        raise
    commands.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}", prepare=False)
    return cursor


def _command(sql: str) -> None:
    """A statement without values, as Django would log it (query logging on)."""
    with bound_cursor() as cursor:
        cursor.execute(sql, prepare=False)


def _wrote(cursor: Any) -> bool:
    result = cursor.pgresult
    return result is not None and result.status == pq.ExecStatus.COMMAND_OK


def _back_to_savepoint() -> bool:
    """After a failed batch: back to the guarded statement's savepoint, if one stands (the
    failure came after it); False when there is none (it came before)."""
    db = connections[DEFAULT_DB_ALIAS]
    raw = db.connection
    if raw is None or raw.closed:
        return False
    if raw.info.transaction_status not in (
        pq.TransactionStatus.INTRANS,
        pq.TransactionStatus.INERROR,
    ):
        return False
    try:
        _command(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        _command(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    except Exception:
        return False
    return True


def _write_alone(statement: Guarded) -> int | None:
    """One guarded statement in a round trip of its own (a batch that failed before it): the
    rows it wrote, or None when the database refused it (logged)."""
    try:
        _command(f"SAVEPOINT {_SAVEPOINT}")
        with bound_cursor() as cursor:
            rows = cursor.execute(statement.sql, statement.params, prepare=enabled()).rowcount
        _command(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    except Exception:
        if not _back_to_savepoint():
            raise
        logger.exception("%s not written", statement.what)
        return None
    return rows


def _report(statement: Guarded, rows: int | None) -> None:
    try:
        statement.done(rows)
    except Exception:
        logger.exception("reporting %s failed", statement.what)
