"""Instructions per /v1 request of two checkouts' servers, counted by valgrind (callgrind).

    .venv/bin/python benchmarks/ab_instructions.py BEFORE_DIR AFTER_DIR [--kind stream|json|models]
        [--clients 1] [--requests 100] [--idle-seconds 10] [--before-env K=V] [--after-env K=V]

Why: CPU time on a shared machine is noisy. On one machine on 2026-12-06, the same two trees
measured with benchmarks/ab_trees.py gave 3.95 / 4.17 ms per streamed request in one run and
5.77 / 5.72 in the next, minutes apart, so a change worth 2-5% cannot be seen. Instructions are
counted, not timed: the same request costs the same count whatever else the machine does (the
same tree measured twice: 14.00 and 14.19 M instructions per streamed request, 1 client).

Each tree (a checkout with its own .venv, as for ab_trees.py) gets its scratch database, set up by
its own code; both servers (uvicorn, one worker, lifespan on) start at once under
`valgrind --tool=callgrind` (about 50x slower: startup takes a minute or two). Each gets a warm-up
batch; then its counters are zeroed, it sits idle for `--idle-seconds` (what its background
threads and timers cost per second: subtracted below for the batch's wall time), is zeroed again,
takes `--requests` requests from `--clients` clients, and its counters are dumped. Prints each
tree's instructions per request (raw, and net of the idle rate) and after/before.

What it does not tell: time spent waiting, system calls' cost in the kernel (a count of
instructions run in user space; syscalls are a few instructions here), and contention effects
that only appear under concurrency (valgrind runs one thread at a time). Confirm a real gain on
CPU time with ab_trees.py or chat_load.py; use this to see small changes at all.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import ab_trees as ab
import chat_load as cl
from _setup import drop_scratch_database


def _serve(
    tree: str, database: str, env: dict, extra: dict, out: str
) -> tuple[subprocess.Popen, int]:
    base = env["DATABASE_URL"].rsplit("/", 1)[0]
    port = cl._free_port()
    served = dict(env, DATABASE_URL=f"{base}/{database}", CADENCE_LOG_LEVEL="WARNING", **extra)
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.%p",
        "--dump-instr=no", f"{tree}/.venv/bin/python", "-m", "uvicorn",
        "cadence_site.asgi:application", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--lifespan", "on", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    log = open(f"{out}/server.log", "w")  # noqa: SIM115 - kept open for the server's life
    return subprocess.Popen(command, cwd=tree, env=served, stdout=log, stderr=log), port


def _wait_up(port: int, process: subprocess.Popen, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server on port {port} did not start") from None
            time.sleep(2)


class Counted:
    """One server under callgrind: zero its counters, dump them, read what a dump counted."""

    def __init__(self, process: subprocess.Popen, out: str) -> None:
        self.process, self.out = process, out
        self.read: set[str] = set(glob.glob(f"{out}/callgrind.*"))

    def _control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.process.pid)], capture_output=True, check=True
        )

    def zero(self) -> None:
        self._control("-z")

    def dump(self) -> int:
        self._control("-d")
        deadline = time.monotonic() + 60
        while True:
            new = set(glob.glob(f"{self.out}/callgrind.*")) - self.read
            total = 0
            complete = bool(new)
            for path in new:
                with open(path) as f:
                    found = [line for line in f if line.startswith(("summary:", "totals:"))]
                if not found:
                    complete = False  # still being written
                    break
                total += int(found[0].split()[1])
            if complete:
                self.read |= new
                return total
            if time.monotonic() > deadline:
                raise SystemExit("callgrind wrote no dump")
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--kind", choices=sorted(ab.CASES), default="stream")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    ab.add_env_arguments(parser)
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind (with callgrind_control) is needed: apt-get install valgrind")
    extra, env = ab.tree_environments(args)
    trees = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    servers: dict[str, tuple[subprocess.Popen, int, str, str]] = {}
    results: dict[str, tuple[float, float]] = {}
    try:
        for name, tree in trees.items():
            database = f"cadence_bench_instr_{name}"
            key = ab._setup(tree, database, env)
            out = tempfile.mkdtemp(prefix=f"ab_instructions_{name}_")
            process, port = _serve(tree, database, env, extra[name], out)
            servers[name] = (process, port, key, out)
        print("servers starting under valgrind (a minute or two)...", flush=True)
        for process, port, key, _ in servers.values():
            _wait_up(port, process)
            asyncio.run(ab._batch(port, key, args.kind, 30, args.clients))  # warm-up
        for name, (process, port, key, out) in servers.items():
            counted = Counted(process, out)
            counted.zero()
            time.sleep(args.idle_seconds)
            idle_rate = counted.dump() / args.idle_seconds
            counted.zero()
            began = time.monotonic()
            asyncio.run(ab._batch(port, key, args.kind, args.requests, args.clients))
            elapsed = time.monotonic() - began
            total = counted.dump()
            raw = total / args.requests / 1e6
            net = (total - idle_rate * elapsed) / args.requests / 1e6
            results[name] = (raw, net)
            print(
                f"{name:>6} {args.kind} at {args.clients} clients: {net:.2f} M instructions/req"
                f" net of idle ({raw:.2f} raw; idle {idle_rate / 1e6:.2f} M/s, batch"
                f" {elapsed:.0f} s)  ({trees[name]}"
                f"{''.join(f' {k}={v}' for k, v in extra[name].items())})",
                flush=True,
            )
        print(f" after/before: {results['after'][1] / results['before'][1]:.3f}")
    finally:
        for process, _, _, out in servers.values():
            cl._stop(process)
            shutil.rmtree(out, ignore_errors=True)
        for name in trees:
            drop_scratch_database(env["DATABASE_URL"], f"cadence_bench_instr_{name}")


if __name__ == "__main__":
    sys.exit(main())
