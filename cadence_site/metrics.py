"""Prometheus metrics at /metrics, summed over every server and worker process.

Multiprocess mode (prometheus_client's): with PROMETHEUS_MULTIPROC_DIR set, every process writes
its counters and histograms to memory-mapped files in that directory and /metrics, whichever
process answers it, reads them all. The variable must be in the environment before any process
imports prometheus_client, and the directory must be emptied before the processes start (stale
files from an earlier run would be summed in): `make run` does both (cadence_site/launcher.py);
elsewhere run `python -m cadence_site.metrics clean` first (README, "Metrics and traces"). A
process that exits marks itself dead (its live gauges leave the sum; its counters stay, so that
totals never go backwards). Without the variable, /metrics shows the answering process alone.

Who may read it: with CADENCE_METRICS_TOKEN set, a request carrying
`Authorization: Bearer <token>`; without it, only a direct request from the loopback address (a
request forwarded by a proxy, even one on this machine, is refused: set the token).

Labels that come from tenants' data (organization, orchestrator, error code) are capped per
process: past CADENCE_METRICS_MAX_LABEL_VALUES distinct values of one label, further values are
reported as "other", so that one organization creating orchestrators in a loop cannot grow every
scrape without bound.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import sys
import threading
from pathlib import Path

OTHER = "other"


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def clean(directory: str | Path) -> None:
    """Removes the metric files (*.db) from the multiprocess directory, creating it if needed;
    run before any process starts. Nothing else in the directory is touched."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.glob("*.db"):
        if entry.is_file():
            entry.unlink()


def mark_process_dead(pid: int | None = None) -> None:
    """This process (or `pid`) has exited: its live gauges no longer count."""
    if not multiprocess_dir():
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid() if pid is None else pid)


def forget_dead_processes(directory: str | Path | None = None) -> list[int]:
    """Marks dead every process whose live-gauge files remain but that no longer runs (a worker
    killed by SIGKILL or the OOM killer never marks itself); the pids it marked."""
    directory = directory or multiprocess_dir()
    if not directory:
        return []
    pids = set()
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit():
            pids.add(int(pid))
    dead = []
    for pid in sorted(pids):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.append(pid)
        except PermissionError:  # alive, someone else's
            continue
    if dead:
        from prometheus_client import multiprocess

        for pid in dead:
            multiprocess.mark_process_dead(pid, str(directory))
    return dead


class LabelCap:
    """Distinct values of one label, at most `limit` per process; the rest become "other"."""

    def __init__(self, limit: int | None = None) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        if self._limit is None:
            from django.conf import settings

            self._limit = int(getattr(settings, "CADENCE_METRICS_MAX_LABEL_VALUES", 100))
        return self._limit

    def __call__(self, value: str) -> str:
        value = value or "none"
        if value in self._seen:
            return value
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(value)
            return value


# --- the endpoint ------------------------------------------------------------------------------


def _allowed(request) -> tuple[bool, int, str]:
    from django.conf import settings

    token = getattr(settings, "CADENCE_METRICS_TOKEN", "")
    if token:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
            return True, 200, ""
        return False, 401, "Send Authorization: Bearer <CADENCE_METRICS_TOKEN>."
    if request.META.get("HTTP_X_FORWARDED_FOR") or request.META.get("HTTP_FORWARDED"):
        return False, 403, "Forwarded requests need CADENCE_METRICS_TOKEN to be set and sent."
    try:
        loopback = ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return False, 403, "Only loopback may read /metrics unless CADENCE_METRICS_TOKEN is set."
    return True, 200, ""


def registry():
    """The registry to expose: every process's files in multiprocess mode, else this process's."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if not multiprocess_dir():
        return REGISTRY
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    return collected


def metrics_view(request):
    from django.http import HttpResponse, JsonResponse
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    ok, status, message = _allowed(request)
    if not ok:
        response = JsonResponse(
            {
                "error": {
                    "code": "metrics_unauthorized" if status == 401 else "metrics_forbidden",
                    "message": message,
                    "details": {},
                }
            },
            status=status,
        )
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    # Importing the metrics' modules registers them (in this process) even before first use.
    import engine.runs.metrics  # noqa: F401

    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["clean"] or len(args) > 2:
        print("usage: python -m cadence_site.metrics clean [DIR]", file=sys.stderr)  # noqa: T201
        return 2
    directory = args[1] if len(args) == 2 else multiprocess_dir()
    if not directory:
        print("PROMETHEUS_MULTIPROC_DIR is not set and no DIR given", file=sys.stderr)  # noqa: T201
        return 2
    clean(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
