"""pytest-xdist workers side by side: each gets services of its own (a pytest plugin, `-p` in
pyproject.toml's addopts, so it runs before pytest-django reads the settings).

`make test` runs the suite on several workers (cadence_site/launcher.py). What two workers would
otherwise share, and what keeps them apart:

- the test database: pytest-django suffixes its name per worker (`test_cadence_gw1`);
- Redis: the worker's own database, REDIS_URL's index plus the worker's number (mod 16), so
  the org cache, rate-limit buckets, tickets, run queues, streams and channel groups of one
  worker are never another's. Pub/sub channels span Redis databases (and the RabbitMQ fanout
  exchange spans every process): lifecycle events reach every worker's listeners, which is
  harmless, since they name instances by their UUID, which only one worker's database holds;
- media files (plugin packages are stored under their name and version, which every worker
  uploads alike): a folder per worker below CADENCE_MEDIA_ROOT;
- live servers, Celery workers and the other processes tests start: free ports, queues named by
  a uuid, and the worker's REDIS_URL and test database handed down through their environment.

Files are scheduled whole (`--dist loadfile`: a module's live server starts once) and in the
order a single process runs them (`--no-loadscope-reorder`), so that the modules one worker runs
come in the same order as in a run on one process: tests that share the committed organizations
(conftest.py) meet what earlier modules left there as they do on one process. Starting the
modules with slow tests first made a run-list test see the runs a later module had left.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

# Set once a process's environment has been made its worker's: a process started by a worker
# inherits the environment, and with it this mark, so its URLs are not shifted twice.
MARK = "CADENCE_TEST_WORKER"
REDIS_DATABASES = 16  # Redis's default `databases`


def worker_number(worker_id: str) -> int:
    """`gw3` → 3 (pytest-xdist's worker ids)."""
    return int(worker_id.removeprefix("gw"))


def worker_redis_url(url: str, number: int) -> str:
    """The URL of Redis database (index + number) mod 16 on the same server: the index is the
    path (`redis://host:port/13`) or, for unix sockets, the `db` query parameter."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.scheme == "unix":
        index = int(dict(query).get("db") or 0)
        shifted = (index + number) % REDIS_DATABASES
        query = [(k, v) for k, v in query if k != "db"] + [("db", str(shifted))]
        # Not urlunsplit: it drops the empty host of `unix:///path`.
        return f"{url.partition('?')[0]}?{urlencode(query)}"
    index = int(parts.path.strip("/") or dict(query).get("db") or 0)
    shifted = (index + number) % REDIS_DATABASES
    query = [(k, v) for k, v in query if k != "db"]
    return urlunsplit(parts._replace(path=f"/{shifted}", query=urlencode(query)))


def isolate(environ: MutableMapping[str, str], worker_id: str, var_dir: Path) -> None:
    """Make `environ` the worker's: its Redis database and its media folder."""
    if environ.get(MARK) == worker_id:
        return
    number = worker_number(worker_id)
    if environ.get("REDIS_URL"):
        environ["REDIS_URL"] = worker_redis_url(environ["REDIS_URL"], number)
    media = environ.get("CADENCE_MEDIA_ROOT") or str(var_dir / "media")
    environ["CADENCE_MEDIA_ROOT"] = str(Path(media) / f"xdist-{worker_id}")
    environ[MARK] = worker_id


def _var_dir() -> Path:
    return Path(os.environ.get("CADENCE_VAR_DIR", Path(__file__).resolve().parent.parent / "var"))


# At import: pytest imports `-p` plugins before any hook runs, and pytest-django loads the
# settings in the first of them. pytest-xdist sets PYTEST_XDIST_WORKER before a worker starts.
if os.environ.get("PYTEST_XDIST_WORKER"):
    isolate(os.environ, os.environ["PYTEST_XDIST_WORKER"], _var_dir())


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """In the controller of a distributed run: the services it found (the settings may have
    discovered or started embedded ones, with no URL in the environment) are handed to the
    workers it is about to start, so that they do not each look for, or start, their own."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "numprocesses", None):
        return
    from django.conf import settings

    if settings.configured:
        os.environ.setdefault("DATABASE_URL", settings.DATABASE_URL)
        os.environ.setdefault("REDIS_URL", settings.REDIS_URL)
