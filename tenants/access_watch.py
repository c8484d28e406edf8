"""Who an API key is, kept in a server process until the database says it changed.

Authenticating a key reads the key, whoever vouches for it and its organization: statements and
a thread hop on every request, to follow rights that almost never change. Triggers on the rows
those reads come from (tenants/migrations/0006_access_notify.py: keys, memberships,
organizations, and the users' `is_active`/`is_staff`) send `NOTIFY cadence_access` with the
organization's id (`*` for a user, whose memberships span organizations) in the transaction that
changes them. PostgreSQL delivers it when, and only if, that transaction commits, whatever wrote
it: a service, the admin, a bulk update, psql. Inside each organization's schema, teams, their
members, orchestrator shares and an orchestrator's status or team notify `schema:<name>`
(tenants/teams/migrations/0003_access_notify.py).

Every server process runs one `AccessWatch` (started by the ASGI lifespan): a thread listening on
its own connection, counting the notifications per organization. What authentication resolved
is kept (`remember`) with the counts read before it was resolved, and given back (`recall`) only
while they are unchanged. Nothing is given back:

- while the watch is not listening (not started, as in tests that serve in-process; connection
  lost; reconnecting): every lookup reads the database, as without the watch;
- while a notification waits unread on the watch's socket: a change just committed is never
  outrun by a request arriving before the watch thread ran;
- past a key's expiry (checked at every use: time sends no notification), nor after MAX_AGE.

Open sockets use `version()` the same way: a chat socket keeps its conversation and its caller's
teams, and the rights re-read of tenants/ws_access.py is skipped, while it is unchanged.

So a change applies to the next request of any process, within the notification's delivery
(under a millisecond on one host), where reading on every request applied it at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import select
import threading
import time
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

CHANNEL = "cadence_access"
EVERYONE = "*"
SCHEMA_PREFIX = "schema:"
# How often the watch thread looks up from its socket (to stop when asked, to probe).
WAKE = 0.5
# The watch hears itself every PROBE_EVERY seconds, or stops listening after PROBE_WAIT.
PROBE_PREFIX = "probe:"
PROBE_EVERY = 10.0
PROBE_WAIT = 5.0
# An entry is read again after this long whatever the notifications said.
MAX_AGE = 300.0
MAX_ENTRIES = 10_000
RECONNECT_DELAY = (0.5, 10.0)


@dataclass(frozen=True, slots=True)
class Stamp:
    """The watch's counts as seen before a lookup; `remember` keeps what the lookup found only
    if they are still the same (nothing was notified meanwhile)."""

    generation: int
    changes: int


class _Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.listening = False
        self.fd: int | None = None
        # Bumped whenever listening starts or stops: what was kept before is never trusted after.
        self.generation = 0
        self.changes = 0  # every notification, of any organization
        self.reading = False  # the watch thread is reading its socket
        self.everyone = 0
        self.orgs: dict[int, int] = {}
        # Changes inside an organization's schema: teams, shares, orchestrators' status and team
        # (tenants/teams/migrations/0003_access_notify.py), by schema name.
        self.schemas: dict[str, int] = {}


_counts = _Counts()
# digest of (kind, secret) -> (org_id, generation, everyone, org count, deadline, expires, value)
_entries: dict[bytes, tuple] = {}


def listening() -> bool:
    return _counts.listening


def _pending() -> bool:
    """Whether a notification (or anything) waits unread on the watch's socket. Asked first:
    the watch thread marks `reading` before it reads the socket and clears it after counting,
    so a notification that arrived before this is asked is seen here, there or in the counts."""
    fd = _counts.fd
    if fd is None:
        return True
    poller = select.poll()
    try:
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))  # readable, or an error / hang-up / closed descriptor
    except (OSError, ValueError):
        return True


def stamp() -> Stamp | None:
    """Taken before resolving what `remember` will keep; None when nothing may be kept now."""
    counts = _counts
    # In this order: a notification not yet read, being read, or counted (_pending()).
    if not counts.listening or _pending() or counts.reading:
        return None
    return Stamp(counts.generation, counts.changes)


def _digest(kind: str, secret: str) -> bytes:
    return hashlib.sha256(f"{kind}\0{secret}".encode()).digest()


def remember(
    kind: str, secret: str, value: Any, *, org_id: int, before: Stamp | None, expires: Any = None
) -> None:
    """Keep `value` (what `secret` resolved to, for organization `org_id`) if nothing changed
    since `before` was stamped. `expires`: the earliest expiry (an aware datetime) of what it
    depends on, past which it is not given back."""
    counts = _counts
    if before is None:
        return
    with counts.lock:
        if (
            not counts.listening
            or counts.generation != before.generation
            or counts.changes != before.changes
        ):
            return
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()
        _entries[_digest(kind, secret)] = (
            org_id,
            counts.generation,
            counts.everyone,
            counts.orgs.get(org_id, 0),
            time.monotonic() + MAX_AGE,
            expires.timestamp() if expires is not None else None,
            value,
        )


def recall(kind: str, secret: str) -> Any | None:
    """What `remember` kept for `secret`, if nothing it depends on may have changed since."""
    counts = _counts
    if not counts.listening or not _entries:
        return None
    digest = _digest(kind, secret)
    entry = _entries.get(digest)
    if entry is None:
        return None
    org_id, generation, everyone, org_count, deadline, expires, value = entry
    # In this order (see _pending): unread, being read, then counted.
    if (
        _pending()
        or counts.reading
        or generation != counts.generation
        or everyone != counts.everyone
        or org_count != counts.orgs.get(org_id, 0)
        or time.monotonic() > deadline
        or (expires is not None and time.time() >= expires)
    ):
        _entries.pop(digest, None)
        return None
    return value


def forget() -> None:
    """Drop everything kept (tests; a process that wants a clean slate)."""
    with _counts.lock:
        _entries.clear()


def version(org_id: int, schema_name: str) -> tuple | None:
    """What has changed so far for an organization: its rows, its schema's team rows, anyone's
    rights. Equal to a version taken earlier: nothing changed in between. None: not known now
    (not listening, or a notification unread or being read), so read."""
    counts = _counts
    if not counts.listening or _pending() or counts.reading:
        return None
    return (
        counts.generation,
        counts.everyone,
        counts.orgs.get(org_id, 0),
        counts.schemas.get(schema_name, 0),
    )


def _noted(payload: str) -> None:
    counts = _counts
    with counts.lock:
        counts.changes += 1
        if payload == EVERYONE:
            counts.everyone += 1
            return
        if payload.startswith(SCHEMA_PREFIX):
            name = payload[len(SCHEMA_PREFIX) :]
            counts.schemas[name] = counts.schemas.get(name, 0) + 1
            return
        try:
            org_id = int(payload)
        except ValueError:  # not ours: treat as a change to everything
            counts.everyone += 1
            return
        counts.orgs[org_id] = counts.orgs.get(org_id, 0) + 1


def _set_listening(fd: int | None) -> None:
    counts = _counts
    with counts.lock:
        counts.generation += 1
        counts.listening = fd is not None
        counts.fd = fd
        _entries.clear()


def _conninfo(application_name: str = "cadence-access-watch") -> dict:
    from django.db import connections

    params = dict(connections["default"].get_connection_params())
    for name in ("context", "cursor_factory", "prepare_threshold", "server_side_binding"):
        params.pop(name, None)
    params.setdefault("connect_timeout", 5)
    # A connection that died silently (no reset came) is found within about a minute.
    params.setdefault("keepalives", 1)
    params.setdefault("keepalives_idle", 30)
    params.setdefault("keepalives_interval", 10)
    params.setdefault("keepalives_count", 3)
    params["application_name"] = application_name
    return {name: value for name, value in params.items() if value not in (None, "")}


class _Probe:
    """A notification the watch sends itself through a connection of its own, the way changes
    are written, every PROBE_EVERY seconds: a watch that stops hearing (a silently dropped
    connection, a pooler that took the LISTEN elsewhere) stops listening within PROBE_WAIT."""

    def __init__(self) -> None:
        self.outstanding: str | None = None
        self.sent_at = 0.0
        self.due = 0.0

    def send(self) -> None:
        import uuid

        import psycopg

        self.outstanding = f"{PROBE_PREFIX}{uuid.uuid4()}"
        self.sent_at = time.monotonic()
        with psycopg.connect(**_conninfo("cadence-access-probe"), autocommit=True) as sender:
            sender.execute("SELECT pg_notify(%s, %s)", [CHANNEL, self.outstanding])

    def heard(self, payload: str) -> None:
        if payload == self.outstanding:
            self.outstanding = None
            self.due = time.monotonic() + PROBE_EVERY

    def check(self) -> None:
        now = time.monotonic()
        if self.outstanding is not None:
            if now - self.sent_at > PROBE_WAIT:
                raise TimeoutError(
                    f"the watch's own notification did not come back within {PROBE_WAIT:g} s"
                    " (a pooler in transaction mode? set CADENCE_ACCESS_WATCH=false)"
                )
        elif now >= self.due:
            self.send()


class AccessWatch(threading.Thread):
    """Listens for access changes in a daemon thread, reconnecting until stopped."""

    def __init__(self) -> None:
        super().__init__(name="cadence-access-watch", daemon=True)
        self.stopping = threading.Event()
        self.ready = threading.Event()  # set while listening (tests wait on it)

    def run(self) -> None:
        import psycopg
        from psycopg import pq

        delay = RECONNECT_DELAY[0]
        while not self.stopping.is_set():
            conn = None
            try:
                conn = psycopg.connect(**_conninfo(), autocommit=True)
                conn.execute(f"LISTEN {CHANNEL}")
                pgconn = conn.pgconn
                poller = select.poll()
                poller.register(pgconn.socket, select.POLLIN)
                probe = _Probe()
                # Listening only once a notification sent the way changes are written came
                # back: a LISTEN can succeed and hear nothing (a pooler in transaction mode).
                probe.send()
                while probe.outstanding and not self.stopping.is_set():
                    probe.check()
                    if poller.poll(WAKE * 1000):
                        self._read(pgconn, probe)
                _set_listening(pgconn.socket)
                self.ready.set()
                delay = RECONNECT_DELAY[0]
                while not self.stopping.is_set():
                    probe.check()  # raises when one did not come back in time
                    if poller.poll(WAKE * 1000):
                        self._read(pgconn, probe)
                    if pgconn.status != pq.ConnStatus.OK:
                        raise psycopg.OperationalError("the connection ended")
            except Exception as exc:
                if not self.stopping.is_set():
                    logger.warning(
                        "access watch lost its connection: authentication reads the database"
                        " until it is back",
                        extra={"error": f"{type(exc).__name__}: {exc}"[:300]},
                    )
            finally:
                # Not listening before the descriptor is closed (and perhaps reused).
                self.ready.clear()
                _set_listening(None)
                if conn is not None:
                    with contextlib.suppress(Exception):  # closing a dead one may fail too
                        conn.close()
            self.stopping.wait(delay)
            delay = min(delay * 2, RECONNECT_DELAY[1])

    @staticmethod
    def _read(pgconn, probe: _Probe) -> None:
        # Marked before the socket is read: between the read and the counting, the socket
        # no longer says a change came, and this does.
        _counts.reading = True
        try:
            pgconn.consume_input()  # raises once the connection has ended
            while (note := pgconn.notifies()) is not None:
                payload = note.extra.decode(errors="replace")
                if payload.startswith(PROBE_PREFIX):
                    probe.heard(payload)
                else:
                    _noted(payload)
        finally:
            _counts.reading = False

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.join(timeout)


_watch: AccessWatch | None = None
_watch_lock = threading.Lock()


def start() -> AccessWatch | None:
    """Once per serving process (cadence_site/lifespan.py); None when CADENCE_ACCESS_WATCH is
    off (a pooler that cannot carry LISTEN would deliver no notification: nothing is kept)."""
    from django.conf import settings

    global _watch
    if not settings.CADENCE_ACCESS_WATCH:
        return None
    with _watch_lock:
        if _watch is None or not _watch.is_alive():
            _watch = AccessWatch()
            _watch.start()
        return _watch


def stop() -> None:
    global _watch
    with _watch_lock:
        watch, _watch = _watch, None
    if watch is not None:
        watch.stop()
