"""One long-lived process that owns the embedded services and runs Cadence or its test suite.

    python -m cadence_site.launcher run                 # what `make run` does
    python -m cadence_site.launcher test [pytest args]  # what `make test` does
    python -m cadence_site.launcher services            # only the services, until Ctrl-C

URLs in the environment (or in ``.env``) always win; for each one missing, the launcher uses the
services another launcher already owns (``var/services.json``) or starts its own and stops them
when it exits. Children get the URLs in their environment, so they never start services of
their own, and ``manage.py`` in another terminal finds them through ``var/services.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from cadence_site import embedded

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

logger = logging.getLogger("cadence.launcher")


class Stopped(Exception):
    """A SIGINT or SIGTERM arrived: stop what runs, then the services, and exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Launcher:
    def __init__(self) -> None:
        self.var_dir = Path(os.environ.get("CADENCE_VAR_DIR", BASE_DIR / "var")).resolve()
        self.owned: embedded.EmbeddedServices | None = None
        self.env: dict[str, str] = {}
        self._child: subprocess.Popen[bytes] | None = None
        self._stop_signal: int | None = None

    # -- signals ---------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_signal = signum
        child = self._child
        if child is not None and child.poll() is None:
            # A Ctrl-C already reached the child through the terminal's process group; a SIGTERM
            # sent to us alone (by make, systemd, docker) is passed on. Either way the child
            # finishes its own cleanup (pytest tears down its test database) before we go on.
            if signum == signal.SIGTERM:
                child.send_signal(signal.SIGTERM)
            return
        raise Stopped(signum)

    # -- services --------------------------------------------------------------------------

    def acquire_services(self) -> dict[str, str]:
        """The URL of every service: from the environment, another launcher, or started here."""
        urls = {name: os.environ[name] for name in embedded.SERVICE_NAMES if os.environ.get(name)}
        for name, value in urls.items():
            logger.info("%s from the environment: %s", name, _redact(value))
        missing = [name for name in embedded.SERVICE_NAMES if name not in urls]
        if missing:
            found = embedded.discover(self.var_dir)
            for name in missing:
                if name in found:
                    urls[name] = found[name]
                    logger.info(
                        "%s: embedded service owned by another launcher (%s)",
                        name,
                        self.var_dir / embedded.SERVICES_FILE,
                    )
        missing = [name for name in embedded.SERVICE_NAMES if name not in urls]
        if missing:
            logger.info("starting embedded services with their data in %s", self.var_dir)
            self.owned = embedded.start(
                self.var_dir,
                database=embedded.DATABASE_URL in missing,
                redis=embedded.REDIS_URL in missing,
            )
            urls.update(self.owned.urls)
        self.env = {**os.environ, **urls, "PYTHONUNBUFFERED": "1"}
        return urls

    def release_services(self) -> None:
        if self.owned is not None:
            logger.info("stopping the embedded services")
            self.owned.stop()
            self.owned = None

    # -- children --------------------------------------------------------------------------

    def call(self, description: str, cmd: Sequence[str]) -> int:
        """Run one child to completion in the foreground; its exit code."""
        logger.info("%s: %s", description, shlex.join(cmd))
        self._child = subprocess.Popen(list(cmd), cwd=BASE_DIR, env=self.env)
        try:
            returncode = self._child.wait()
        finally:
            self._child = None
        if self._stop_signal is not None:
            raise Stopped(self._stop_signal)
        return returncode

    def check(self, description: str, cmd: Sequence[str]) -> None:
        returncode = self.call(description, cmd)
        if returncode != 0:
            raise SystemExit(f"{description} failed (exit code {returncode})")

    # -- commands --------------------------------------------------------------------------

    def run(self) -> int:
        port = os.environ.get("PORT", "8000")
        if not _port_free("127.0.0.1", int(port)):
            raise SystemExit(f"port {port} on 127.0.0.1 is in use: stop what uses it or set PORT")
        self.acquire_services()
        self.env.update(local_development_defaults(os.environ))
        self.env.update(self.metrics_directory())
        report_frameworks()
        manage = [PYTHON, "manage.py"]
        self.check(
            "applying migrations (shared, template and tenant schemas)", [*manage, "migrate"]
        )
        self.check("creating the demo organization and logins", [*manage, "bootstrap_demo"])
        return self.serve(port)

    def metrics_directory(self) -> dict[str, str]:
        """One directory where the server and the worker processes write their metrics, emptied
        now (before any of them starts): /metrics sums them (cadence_site/metrics.py)."""
        from cadence_site.metrics import clean

        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(
            self.var_dir / "prometheus-multiproc"
        )
        clean(directory)
        logger.info("metrics of every process in %s (PROMETHEUS_MULTIPROC_DIR)", directory)
        return {"PROMETHEUS_MULTIPROC_DIR": directory}

    def serve(self, port: str) -> int:
        from honcho.manager import Manager

        web = [
            PYTHON, "-m", "uvicorn", "cadence_site.asgi:application",
            "--host", "127.0.0.1", "--port", port, "--lifespan", "on",
        ]  # fmt: skip
        workers = web_concurrency(os.environ)
        if workers > 1:
            # Several processes on one port: nothing a request needs lives in one process (live
            # feeds are Redis streams, sessions and limits in the database and Redis).
            web += ["--workers", str(workers)]
        worker = [PYTHON, "-m", "celery", "-A", "cadence_site", "worker", "-l", "INFO"]
        # One machine: the worker also runs beat (periodic signed tree heads, engine/trust/tasks.py).
        worker += ["--beat", "--schedule", str(self.var_dir / "celerybeat-schedule")]
        worker += ["-Q", "celery,runs"]  # queued runs have their own queue (engine/durable)
        manager = Manager()
        # exec: the shell honcho starts is replaced, so its SIGTERM reaches the server itself.
        manager.add_process("web", f"exec {shlex.join(web)}", env=self.env, cwd=str(BASE_DIR))
        # The worker runs supervised: a crashed worker is restarted instead of stopping the stack.
        supervised = [PYTHON, "-m", "cadence_site.supervise", "worker", "--", *worker]
        manager.add_process(
            "worker", f"exec {shlex.join(supervised)}", env=self.env, cwd=str(BASE_DIR)
        )
        logger.info(
            "serving http://127.0.0.1:%s/ (HTTP and WebSocket, %d server process%s) with a "
            "Celery worker; Ctrl-C stops them and the embedded services",
            port,
            workers,
            "" if workers == 1 else "es",
        )
        # honcho installs its own SIGINT/SIGTERM handlers: it stops every process, then returns.
        manager.loop()
        return int(manager.returncode or 0)

    def test(self, pytest_args: Sequence[str]) -> int:
        self.acquire_services()
        args = [*test_worker_args(pytest_args, os.environ), *pytest_args]
        returncode = self.call("running the test suite", [PYTHON, "-m", "pytest", *args])
        if returncode == 5:
            logger.error("pytest collected no tests: reported as a failure (exit code 5)")
        return returncode

    def services(self) -> int:
        urls = self.acquire_services()
        for name, value in urls.items():
            print(f"export {name}={shlex.quote(value)}", flush=True)
        if self.owned is None:
            logger.info("nothing to start: every service is configured or owned elsewhere")
            return 0
        logger.info("embedded services running; Ctrl-C stops them")
        while True:
            signal.pause()


def web_concurrency(environ: Mapping[str, str]) -> int:
    """Server processes for `make run`: WEB_CONCURRENCY (as uvicorn and gunicorn read it), else 1."""
    raw = environ.get("WEB_CONCURRENCY", "").strip()
    if not raw:
        return 1
    try:
        workers = int(raw)
    except ValueError:
        raise SystemExit(f"WEB_CONCURRENCY must be a whole number, not {raw!r}") from None
    if not 1 <= workers <= 64:
        raise SystemExit(f"WEB_CONCURRENCY must be between 1 and 64, not {workers}")
    return workers


# The suite waits more than it computes (servers and workers starting, sockets, leases): in one
# process it kept 41% of one core busy (436 s at load 0.3-1.5 without the browser tests; 961 s
# with them at load 4-6). On 3 workers of this 2-core machine, with the browser tests, the
# machine shared with other suites and benchmarks (2026-12-06): 428 s at load 1-12, then, with
# Celery workers that no longer stall each other, 367, 315, 315 and 256 s at load 3-8 (pytest's
# figures; `uptime` before and after each).
# cadence_site/testworkers.py says what keeps the workers apart.
DEFAULT_TEST_WORKERS = 3


def test_worker_args(pytest_args: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """pytest-xdist options that `make test` adds: CADENCE_TEST_WORKERS workers (0 or 1: one
    process), each module whole on one worker (its module-scoped servers start once), modules
    handed out in the suite's own order (cadence_site/testworkers.py says why). Nothing when the
    arguments choose (-n, --numprocesses, --dist, --tx, or `-p no:xdist`)."""
    for index, arg in enumerate(pytest_args):
        if arg.startswith(("--numprocesses", "--dist", "--tx")) or (
            arg.startswith("-n") and not arg.startswith("--")
        ):
            return []
        if arg == "no:xdist" and index and pytest_args[index - 1] == "-p":
            return []
        if arg == "-pno:xdist":
            return []
    raw = environ.get("CADENCE_TEST_WORKERS", "").strip() or str(DEFAULT_TEST_WORKERS)
    try:
        workers = int(raw)
    except ValueError:
        raise SystemExit(f"CADENCE_TEST_WORKERS must be a whole number, not {raw!r}") from None
    if not 0 <= workers <= 16:
        raise SystemExit(f"CADENCE_TEST_WORKERS must be between 0 and 16, not {workers}")
    if workers <= 1:
        return []
    return ["-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder"]


test_worker_args.__test__ = False  # not a test (its name starts with test_)


# Loopback model servers (Ollama on :11434, vLLM, llama.cpp) for `make run` on one machine. A
# deployment started any other way allows nothing beyond public addresses unless it says so.
LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"


def local_development_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """What `make run` adds to the environment unless it is set (also when set empty)."""
    if "CADENCE_EGRESS_ALLOWED_NETWORKS" in environ:
        logger.info(
            "outbound requests may reach CADENCE_EGRESS_ALLOWED_NETWORKS=%s (from the environment)",
            environ["CADENCE_EGRESS_ALLOWED_NETWORKS"] or "(none: public addresses only)",
        )
        return {}
    logger.info(
        "local development: LLM configurations may use model servers on this machine "
        "(CADENCE_EGRESS_ALLOWED_NETWORKS=%s); set CADENCE_EGRESS_ALLOWED_NETWORKS= to refuse them",
        LOOPBACK_NETWORKS,
    )
    return {"CADENCE_EGRESS_ALLOWED_NETWORKS": LOOPBACK_NETWORKS}


def report_frameworks() -> None:
    from orchestrators.adapters import FRAMEWORKS, INSTALL_HINT, framework_available

    missing = [name for name in FRAMEWORKS if not framework_available(name)]
    if missing:
        logger.warning("frameworks not installed: %s. %s", ", ".join(missing), INSTALL_HINT)
    else:
        logger.info("frameworks installed: %s", ", ".join(FRAMEWORKS))


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _redact(url: str) -> str:
    """A URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def _load_dotenv() -> None:
    # settings.py reads .env without overriding the environment; reading it here as well keeps
    # the launcher from starting an embedded service that .env configures elsewhere.
    path = BASE_DIR / ".env"
    if path.exists():
        import environ

        environ.Env.read_env(path, overwrite=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cadence_site.launcher", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="services, migrate, bootstrap_demo, then uvicorn + celery")
    sub.add_parser("test", help="services, then pytest with every argument that follows")
    sub.add_parser("services", help="only start the embedded services and wait")
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `test` belongs to pytest, options included (argparse would claim them).
    if argv[:1] == ["test"]:
        command, pytest_args = "test", argv[1:]
    else:
        command, pytest_args = parser.parse_args(argv).command, []

    logging.basicConfig(level=logging.INFO, format="==> %(message)s", stream=sys.stdout)
    _load_dotenv()
    launcher = Launcher()
    launcher.install_signal_handlers()
    returncode = 1
    try:
        if command == "run":
            returncode = launcher.run()
        elif command == "test":
            returncode = launcher.test(pytest_args)
        else:
            returncode = launcher.services()
    except Stopped as stop:
        logger.info("%s received: shutting down", stop)
        returncode = 128 + stop.signum
    finally:
        # Nothing may interrupt the shutdown: a second Ctrl-C would leave PostgreSQL running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        launcher.release_services()
    return returncode


if __name__ == "__main__":
    sys.exit(main())
