"""A database that will not take a connection is a 503 with Retry-After, not a 500.

The server under test connects as a role of its own with a connection limit (PostgreSQL enforces
it for roles that are not superusers); the test then holds every connection the role may open, so
each connection the server asks for is refused ("too many connections for role"), as a full
`max_connections` or a server that is restarting would refuse it. Once they are given back, the
server answers again. Other processes on the same PostgreSQL are not touched: filling the
server's max_connections instead made another xdist worker's live server answer 500.
"""

from __future__ import annotations

import re
import socket
import tempfile
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from django.db import OperationalError as DjangoOperationalError

from cadence_site.errors import DATABASE_RETRY_SECONDS, database_unavailable
from cadence_site.testing import start_live_server, test_database_url

ROLE_CONNECTIONS = 4


def _as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


@pytest.fixture
def capped_url(committed_db):
    """The test database's URL as a new role that may hold ROLE_CONNECTIONS connections and
    read and write every table; dropped afterwards (roles span the whole server)."""
    url = test_database_url()
    role = f"cadence_capped_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT {ROLE_CONNECTIONS}'
            " IN ROLE pg_read_all_data, pg_write_all_data"
        )
    try:
        yield _as_role(url, role)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                [role],
            )
            deadline = time.monotonic() + 10
            while True:
                try:
                    admin.execute(f'DROP ROLE "{role}"')
                    break
                except psycopg.errors.DependentObjectsStillReferenced:
                    raise
                except psycopg.Error:  # its backends are still ending
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


def _hold_every_connection(url: str, held: list[psycopg.Connection]) -> None:
    """Connections as the role into `held` until PostgreSQL refuses one (the role's limit)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            held.append(psycopg.connect(url, autocommit=True))
        except psycopg.OperationalError as exc:
            assert "too many connections for role" in str(exc)
            return
        assert time.monotonic() < deadline and len(held) <= ROLE_CONNECTIONS


def _refused(url: str, held: list, send) -> httpx.Response:
    """`send()`'s response once the server's connections are all refused: each try first takes
    any connection the server gave back meanwhile (its access watch, whose own probe is
    refused too, drops its connection within seconds and reconnects), until one is a 503."""
    deadline = time.monotonic() + 10
    while True:
        _hold_every_connection(url, held)
        response = send()
        if response.status_code == 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def _served(client: httpx.Client, path: str) -> httpx.Response:
    """GET `path` until it is a 200 again (connections given back: the server reconnects)."""
    deadline = time.monotonic() + 10
    while True:
        response = client.get(path)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def test_a_refused_database_connection_is_a_503_on_every_surface(world, capped_url):
    key = world.alpha.keys["member"]
    log = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
    server = start_live_server(capped_url, output=log)
    held: list[psycopg.Connection] = []
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as client:
            surfaces = ("/v1/models", "/api/v1/orgs/alpha/runs/")
            for path in surfaces:
                assert client.get(path).status_code == 200, path
            form = client.get("/accounts/login/")
            csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)

            v1 = _refused(capped_url, held, lambda: client.get("/v1/models"))
            assert v1.status_code == 503, v1.text
            assert v1.headers["retry-after"] == str(DATABASE_RETRY_SECONDS)
            assert v1.json() == {
                "error": {
                    "message": "The database cannot be reached right now. Retry shortly.",
                    "type": "api_error",
                    "param": None,
                    "code": "database_unavailable",
                }
            }
            rest = _refused(capped_url, held, lambda: client.get("/api/v1/orgs/alpha/runs/"))
            assert rest.status_code == 503, rest.text
            assert rest.headers["retry-after"] == str(DATABASE_RETRY_SECONDS)
            assert rest.json()["error"]["code"] == "database_unavailable"
            # A sign-in (a page whose view reads the database): a page that says so.
            page = _refused(
                capped_url,
                held,
                lambda: client.post(
                    "/accounts/login/",
                    data={"csrfmiddlewaretoken": csrf, "username": "alpha-member", "password": "x"},
                    headers={"Authorization": "", "Referer": f"{server.url}/accounts/login/"},
                ),
            )
            assert page.status_code == 503, page.text
            assert page.headers["retry-after"] == str(DATABASE_RETRY_SECONDS)
            assert "Service unavailable" in page.text
            # Nothing names the database's address to the caller.
            port = str(urlsplit(capped_url).port or 5432)
            assert not any(port in r.text for r in (v1, rest, page))

            for connection in held:
                connection.close()
            held.clear()
            for path in surfaces:
                assert _served(client, path).status_code == 200, path
    finally:
        for connection in held:
            connection.close()
        server.stop()
        log.seek(0)
        output = log.read()
        log.close()
    # The operator's log says why: the refusal, at error level.
    assert "too many connections for role" in output
    assert "Service Unavailable: /v1/models" in output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _raised(fn) -> BaseException:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the error itself is under test
        return exc
    raise AssertionError("nothing was raised")


def _wrapped(exc: BaseException) -> DjangoOperationalError:
    """As Django's DatabaseErrorWrapper raises it: its own class, the driver's as the cause."""
    try:
        raise DjangoOperationalError(*exc.args) from exc
    except DjangoOperationalError as wrapped:
        return wrapped


def test_what_counts_as_the_database_out_of_reach(committed_db, capped_url):
    url = test_database_url()
    nobody = _raised(
        lambda: psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{_free_port()}/x", connect_timeout=2
        )
    )
    held: list[psycopg.Connection] = []
    _hold_every_connection(capped_url, held)
    try:
        full = _raised(lambda: psycopg.connect(capped_url))
    finally:
        for connection in held:
            connection.close()

    def timed_out():
        with psycopg.connect(url) as conn:
            conn.execute("SET statement_timeout = '20ms'")
            conn.execute("SELECT pg_sleep(1)")

    def ended():
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    def bad_sql():
        with psycopg.connect(url) as conn:
            conn.execute("SELEC 1")

    for reachable_not in (nobody, full, _raised(ended)):
        assert database_unavailable(reachable_not), reachable_not
        assert database_unavailable(_wrapped(reachable_not)), reachable_not
    timeout = _raised(timed_out)
    assert isinstance(timeout, psycopg.errors.QueryCanceled)
    for statement_failed in (timeout, _raised(bad_sql), ValueError("x"), None):
        assert not database_unavailable(statement_failed), statement_failed
    assert not database_unavailable(_wrapped(timeout))
