"""`make test` on several pytest-xdist workers: the options the launcher adds, and what keeps the
workers apart (cadence_site/testworkers.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cadence_site.launcher import test_worker_args
from cadence_site.testworkers import MARK, isolate, worker_redis_url

BASE_DIR = Path(__file__).resolve().parents[2]
PARALLEL = ["-n", "3", "--dist", "loadfile", "--no-loadscope-reorder"]


def test_make_test_runs_three_workers_unless_told_otherwise():
    assert test_worker_args([], {}) == PARALLEL
    assert test_worker_args(["-k", "ws", "chat/tests"], {}) == PARALLEL
    assert test_worker_args([], {"CADENCE_TEST_WORKERS": "2"})[:2] == ["-n", "2"]
    for one in ("0", "1"):
        assert test_worker_args([], {"CADENCE_TEST_WORKERS": one}) == []
    for chosen in (
        ["-n", "4"],
        ["-n4"],
        ["--numprocesses=2"],
        ["--dist", "load"],
        ["-p", "no:xdist"],
    ):
        assert test_worker_args(["-q", *chosen], {}) == []
    for bad in ("two", "-1", "17"):
        with pytest.raises(SystemExit, match="CADENCE_TEST_WORKERS"):
            test_worker_args([], {"CADENCE_TEST_WORKERS": bad})


def test_a_workers_redis_database_is_the_urls_plus_its_number_mod_16():
    assert worker_redis_url("redis://127.0.0.1:6379/13", 0) == "redis://127.0.0.1:6379/13"
    assert worker_redis_url("redis://127.0.0.1:6379/13", 2) == "redis://127.0.0.1:6379/15"
    assert worker_redis_url("redis://127.0.0.1:6379/15", 1) == "redis://127.0.0.1:6379/0"
    assert worker_redis_url("redis://127.0.0.1:6379", 1) == "redis://127.0.0.1:6379/1"
    assert worker_redis_url("redis://:s%40cret@127.0.0.1:7000/0", 1) == (
        "redis://:s%40cret@127.0.0.1:7000/1"
    )
    assert worker_redis_url("unix:///run/redis.sock?db=3&x=y", 2) == (
        "unix:///run/redis.sock?x=y&db=5"
    )


def test_a_process_a_worker_starts_keeps_the_workers_services(tmp_path):
    environ = {"REDIS_URL": "redis://127.0.0.1:6379/4"}
    isolate(environ, "gw2", tmp_path)
    assert environ == {
        "REDIS_URL": "redis://127.0.0.1:6379/6",
        "CADENCE_MEDIA_ROOT": str(tmp_path / "media" / "xdist-gw2"),
        MARK: "gw2",
    }
    inherited = dict(environ)
    isolate(inherited, "gw2", tmp_path)  # a live server's settings see the worker's URL as is
    assert inherited == environ


def test_two_workers_get_their_own_redis_database_and_media_folder(tmp_path):
    """A real distributed run (every test on every worker) of a test that reads what the
    settings read from the environment (without Django: three Django start-ups took 10-50 s of
    a loaded machine; cadence_site/settings.py takes REDIS_URL and CADENCE_MEDIA_ROOT as given)."""
    (tmp_path / "test_where.py").write_text(
        "import json, os\n"
        "def test_where():\n"
        "    worker = os.environ['PYTEST_XDIST_WORKER']\n"
        f"    with open({str(tmp_path)!r} + f'/{{worker}}.json', 'w') as fh:\n"
        "        json.dump([os.environ['REDIS_URL'], os.environ['CADENCE_MEDIA_ROOT']], fh)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"PYTEST_XDIST_WORKER", MARK}}
    env.update(REDIS_URL="redis://127.0.0.1:6379/14", CADENCE_MEDIA_ROOT=str(tmp_path / "m"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:django", "-n", "2", "--dist", "each",
         "-c", str(BASE_DIR / "pyproject.toml"), "--rootdir", str(BASE_DIR),
         str(tmp_path / "test_where.py")],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seen = {w: json.loads((tmp_path / f"{w}.json").read_text()) for w in ("gw0", "gw1")}
    assert seen == {
        "gw0": ["redis://127.0.0.1:6379/14", str(tmp_path / "m" / "xdist-gw0")],
        "gw1": ["redis://127.0.0.1:6379/15", str(tmp_path / "m" / "xdist-gw1")],
    }
