"""Test support: a real server process on the test database (used by tests that need a live
server: the OpenAI client, the browser, a second process for lifecycle events)."""

from __future__ import annotations

import os
from dataclasses import dataclass


def test_database_url() -> str:
    """The test database as a URL for another process (pytest-django renamed the database)."""
    from urllib.parse import quote

    from django.db import connection

    s = connection.settings_dict
    auth = quote(s["USER"] or "") + (f":{quote(s['PASSWORD'])}" if s.get("PASSWORD") else "")
    host = s["HOST"] or "127.0.0.1"
    if host.startswith("/"):
        # A unix-socket directory: django-environ reads `user@//dir/name` as HOST=/dir.
        return f"postgres://{auth}@/{quote(host, safe='/')}/{s['NAME']}"
    return f"postgres://{auth}@{host}:{s['PORT'] or 5432}/{s['NAME']}"


test_database_url.__test__ = False  # a helper, not a test


@dataclass
class LiveServer:
    """`uvicorn cadence_site.asgi:application`, as `make run` serves it, in its own process."""

    port: int
    process: object

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_live_server(
    database_url: str, *, log_level: str = "warning", output=None, **env: str
) -> LiveServer:
    """Starts the server on a free port and waits for /healthz; `env` adds or overrides variables
    (CADENCE_RABBITMQ_URL is removed unless given: lifecycle events then use Redis). `output`, a
    file, receives the server's stdout and stderr."""
    return wait_live_servers(
        [spawn_live_server(database_url, log_level=log_level, output=output, **env)]
    )[0]


def start_live_servers(count: int, database_url: str, **env: str) -> list[LiveServer]:
    """`count` servers alike, started side by side (each spends seconds importing Django: started
    one after another, a module's set took as long as that times `count`)."""
    return wait_live_servers([spawn_live_server(database_url, **env) for _ in range(count)])


def spawn_live_server(
    database_url: str, *, log_level: str = "warning", output=None, **env: str
) -> LiveServer:
    """The server's process, started and not waited for (wait_live_servers does)."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from django.conf import settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    environment = dict(
        os.environ,
        DATABASE_URL=database_url,
        REDIS_URL=settings.REDIS_URL,
        CADENCE_LOG_LEVEL="WARNING",
        CADENCE_TESTING="1",
    )
    environment.pop("CADENCE_RABBITMQ_URL", None)
    environment.update(env)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "cadence_site.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lifespan",
            "on",
            "--log-level",
            log_level,
        ],
        cwd=Path(__file__).resolve().parent.parent,
        env=environment,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
    )
    return LiveServer(port, process)


def celery_worker_argv(queue: str, *, loglevel: str = "ERROR", name: str = "") -> list[str]:
    """`celery worker` as tests start it: one queue, the solo pool, no gossip, mingle or
    heartbeat, and a node name of its own (`name`, else a random one).

    On RabbitMQ every worker declares an exclusive remote-control queue named after its node
    (`celery@<host>.celery.pidbox`): with the default node name, a second worker on the broker (the
    crash test's second worker, another test module's worker under pytest-xdist, another
    checkout's suite) stopped at start-up on RESOURCE_LOCKED, after taking a message that stayed
    unacknowledged, and out of the other worker's reach, until its shutdown ended 10 s later."""
    import sys
    import uuid

    node = name or uuid.uuid4().hex[:12]
    return [
        sys.executable, "-m", "celery", "-A", "cadence_site", "worker", "-Q", queue,
        "-n", f"{node}@%h", "--pool", "solo", "--without-heartbeat", "--without-gossip",
        "--without-mingle", "-l", loglevel,
    ]  # fmt: skip


def wait_live_servers(servers: list[LiveServer]) -> list[LiveServer]:
    """Waits until every server answers /healthz (polled every 50 ms); stops them all and fails
    if one exits or is not up within 30 s per server (the time each had when they were started
    one by one: side by side on two loaded cores, they share the CPU)."""
    import time
    import urllib.request

    seconds = 30 * len(servers)
    deadline = time.monotonic() + seconds
    waiting = list(servers)
    try:
        while waiting:
            server = waiting[0]
            if server.process.poll() is not None:
                raise AssertionError(f"the server process exited with {server.process.returncode}")
            try:
                with urllib.request.urlopen(f"{server.url}/healthz", timeout=1):
                    waiting.pop(0)
                    continue
            except OSError:
                pass  # not listening yet: polled again after the pause below
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not start within {seconds:g} s")
            time.sleep(0.05)
    except BaseException:
        for server in servers:
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait(timeout=10)
        raise
    return servers


# --- headless Chromium (Debian's), driven by Playwright -------------------------------------------

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    import shutil

    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def browser_skip_reason() -> str:
    """Why browser tests cannot run here, or "" when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the machine
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    if find_chromium() is None:
        return "no Chromium found (apt-get install chromium; .ci/run does this when root)"
    return ""


async def ws_connect(communicator, wait: float = 5) -> tuple[bool, int | None]:
    """(open, close code) of a WebsocketCommunicator's handshake.

    Cadence refuses a socket by accepting it and closing at once with a code and a reason
    (tenants/ws.py), so an accept followed by a close is a refusal; the close stays readable
    (`communicator.refusal`). A close before any accept (a bare 403) is reported the same way."""
    import asyncio

    connected, detail = await communicator.connect(timeout=wait)
    if not connected:
        communicator.refusal = {"code": detail, "reason": None}
        return False, detail
    for _ in range(3):
        await asyncio.sleep(0)
    queue = communicator.output_queue
    if not queue.empty():
        message = queue.get_nowait()
        if message["type"] == "websocket.close":
            communicator.refusal = message
            return False, message.get("code")
        queue._queue.appendleft(message)  # not a refusal: leave the frame for the test
    return True, None
