"""Keep one child process running: restart it when it dies, stop it when asked to stop.

    python -m cadence_site.supervise NAME -- COMMAND [ARGS...]

`make run` runs the Celery worker under this (cadence_site/launcher.py): honcho stops the whole
stack when any of its processes exits, so a worker killed by the OOM killer or a SIGKILL used to
take the web server down with it. Here a crash is logged and the child restarted, with a backoff
(1 s doubling to 30 s, back to 1 s once a child has lived a minute); SIGTERM or SIGINT is passed
on to the child, and the supervisor exits when the child has.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

logger = logging.getLogger("cadence.supervise")
MAX_BACKOFF = 30.0
HEALTHY_AFTER = 60.0


def supervise(name: str, command: Sequence[str]) -> int:
    stopping: list[int] = []
    child: subprocess.Popen | None = None

    def on_signal(signum, _frame) -> None:
        stopping.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    backoff = 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(list(command))
        logger.info("%s started (pid %d)", name, child.pid)
        while True:
            try:
                returncode = child.wait()
                break
            except InterruptedError:  # pragma: no cover - wait() retries on EINTR itself
                continue
        if stopping:
            return 0
        how = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        _forget_dead_processes()
        if time.monotonic() - started >= HEALTHY_AFTER:
            backoff = 1.0
        logger.warning("%s stopped (%s); restarting in %.0f s", name, how, backoff)
        deadline = time.monotonic() + backoff
        while time.monotonic() < deadline and not stopping:
            time.sleep(0.1)
        if stopping:
            return 0
        backoff = min(MAX_BACKOFF, backoff * 2)


def _forget_dead_processes() -> None:
    """A crashed child (and its pool) never marked itself dead for /metrics' live gauges."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    try:
        from cadence_site.metrics import forget_dead_processes

        forget_dead_processes()
    except Exception:
        logger.exception("clearing the metrics of dead processes failed")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="supervise: %(message)s", stream=sys.stdout)
    if len(args) < 3 or args[1] != "--":
        logger.error("usage: %s", __doc__.strip().splitlines()[2].strip())
        return 2
    return supervise(args[0], args[2:])


if __name__ == "__main__":
    sys.exit(main())
