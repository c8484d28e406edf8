"""`make run`'s worker supervision: a child killed with SIGKILL is restarted; SIGTERM stops all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest


def _pids(output: list[str]) -> list[int]:
    return [int(m.group(1)) for line in output if (m := re.search(r"started \(pid (\d+)\)", line))]


@pytest.fixture
def supervisor():
    process = subprocess.Popen(
        [sys.executable, "-m", "cadence_site.supervise", "sleeper", "--",
         sys.executable, "-c", "import time; time.sleep(600)"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    yield process
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def _read_until(process, lines: list[str], predicate, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not predicate(lines):
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
    assert predicate(lines), lines


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_a_killed_child_is_restarted_and_sigterm_stops_both(supervisor):
    lines: list[str] = []
    _read_until(supervisor, lines, lambda out: len(_pids(out)) == 1)
    first = _pids(lines)[0]

    os.kill(first, signal.SIGKILL)
    _read_until(supervisor, lines, lambda out: len(_pids(out)) == 2)
    second = _pids(lines)[1]

    assert second != first and _alive(second)
    assert any("stopped (signal 9); restarting" in line for line in lines)

    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=20) == 0
    time.sleep(0.2)
    assert not _alive(second)
