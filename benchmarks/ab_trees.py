"""Server CPU per /v1 request of two checkouts, measured side by side on one noisy machine.

    .venv/bin/python benchmarks/ab_trees.py BEFORE_DIR AFTER_DIR [--kind stream|json|models]
        [--rounds 10] [--requests 100] [--clients 10] [--before-env K=V] [--after-env K=V]

Each tree (a checkout with its own .venv, e.g. `git worktree add --detach ../before <commit>` with
a symlinked .venv) gets a scratch database of its own on the configured server (its migrations
may differ), set up by that tree's own code: one organization, an offline orchestrator, the
owner's API key (benchmarks/chat_load.py's _setup_org). Both servers run at once (uvicorn, one
worker, lifespan on) and take batches of `--requests` in turn, the order swapped every round, so a
change in the machine's load touches both alike. Prints each tree's median CPU per request (the
server process and its threads, as chat_load.py's `srv ms/req`) and every batch's figure. The
scratch databases are dropped at the end.

The two trees may be one checkout served two ways: `--before-env` / `--after-env` (repeatable)
set an environment variable for that server alone, e.g. `benchmarks/ab_trees.py . .
--before-env CADENCE_DB_THREADS=6` compares six database threads with the default.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys

import chat_load as cl
from _setup import drop_scratch_database

CHAT = {"model": cl.ORCHESTRATOR, "messages": [{"role": "user", "content": "hi"}]}
CASES = {
    "models": ("GET", "/v1/models", None, "application/json"),
    "json": ("POST", "/v1/chat/completions", CHAT, "application/json"),
    "stream": ("POST", "/v1/chat/completions", {**CHAT, "stream": True}, "text/event-stream"),
}
SETUP = """
import os, sys
tree = sys.argv[1]
sys.path.insert(0, tree + "/benchmarks"); sys.path.insert(0, tree); os.chdir(tree)
os.environ["CADENCE_CELERY_EAGER"] = "1"
from _setup import use_scratch_database
use_scratch_database(sys.argv[2])
import django, logging
django.setup(); logging.disable(logging.WARNING)
import chat_load
print("KEY=" + chat_load._setup_org(0)[0])
"""


def _setup(tree: str, database: str, env: dict) -> str:
    done = subprocess.run(
        [f"{tree}/.venv/bin/python", "-c", SETUP, tree, database],
        capture_output=True,
        text=True,
        cwd=tree,
        env=env,
    )
    keys = [line[4:] for line in done.stdout.splitlines() if line.startswith("KEY=")]
    if not keys:
        raise SystemExit(f"setting up {tree} failed:\n{done.stderr[-3000:]}")
    return keys[0]


def _serve(
    tree: str, database: str, env: dict, extra: dict | None = None
) -> tuple[subprocess.Popen, int]:
    base = env["DATABASE_URL"].rsplit("/", 1)[0]
    port = cl._free_port()
    served = dict(env, DATABASE_URL=f"{base}/{database}", CADENCE_LOG_LEVEL="WARNING")
    served.update(extra or {})
    process = cl._start_server(
        "cadence_site.asgi:application", port, served, subprocess.DEVNULL, tree=tree
    )
    return process, port


async def _batch(port: int, key: str, kind: str, requests: int, clients: int) -> None:
    method, path, payload, accept = CASES[kind]
    stream = accept == "text/event-stream"

    async def client(count: int) -> None:
        http = cl.HttpClient(port, key)
        try:
            for _ in range(count):
                status, body = await http.request(
                    method,
                    path,
                    payload,
                    accept=accept,
                    on_data=(lambda _: None) if stream else None,
                )
                if status >= 300:
                    raise SystemExit(f"HTTP {status}: {body[:200]!r}")
        finally:
            http.close()

    await asyncio.gather(*(client(requests // clients) for _ in range(clients)))


def add_env_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--before-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--after-env", action="append", default=[], metavar="K=V")


def tree_environments(args: argparse.Namespace) -> tuple[dict[str, dict[str, str]], dict]:
    """Each tree's extra variables (--before-env / --after-env) and the environment both servers
    start from; Django set up here, for dropping the scratch databases at the end."""
    extra = {}
    for name, pairs in (("before", args.before_env), ("after", args.after_env)):
        if any("=" not in pair for pair in pairs):
            raise SystemExit(f"--{name}-env takes NAME=VALUE")
        extra[name] = dict(pair.split("=", 1) for pair in pairs)
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        raise SystemExit("set DATABASE_URL and REDIS_URL (both trees' servers use them)")
    env = dict(os.environ)
    env.pop("CADENCE_TESTING", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cadence_site.settings")
    import django

    django.setup()
    return extra, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--kind", choices=sorted(CASES), default="stream")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--clients", type=int, default=10)
    add_env_arguments(parser)
    args = parser.parse_args()
    extra, env = tree_environments(args)
    trees = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    servers: dict[str, tuple[subprocess.Popen, int, str]] = {}
    try:
        for name, tree in trees.items():
            database = f"cadence_bench_ab_{name}"
            key = _setup(tree, database, env)
            process, port = _serve(tree, database, env, extra[name])
            servers[name] = (process, port, key)
        for process, port, key in servers.values():
            cl._wait_for(port, process)
            cl._wait_idle(process.pid)
            asyncio.run(_batch(port, key, args.kind, args.requests, args.clients))  # warm-up
        figures: dict[str, list[float]] = {name: [] for name in servers}
        for n in range(args.rounds):
            for name in list(servers)[:: 1 if n % 2 == 0 else -1]:
                process, port, key = servers[name]
                before = cl._cpu_seconds(process.pid)
                asyncio.run(_batch(port, key, args.kind, args.requests, args.clients))
                cpu = cl._cpu_seconds(process.pid) - before
                figures[name].append(cpu * 1000 / args.requests)
        for name, values in figures.items():
            print(
                f"{name:>6} {args.kind} at {args.clients} clients: median"
                f" {statistics.median(values):.2f} ms/req  batches"
                f" {' '.join(f'{v:.2f}' for v in values)}  ({trees[name]}"
                f"{''.join(f' {k}={v}' for k, v in extra[name].items())})"
            )
    finally:
        for process, _, _ in servers.values():
            cl._stop(process)
        for name in trees:
            drop_scratch_database(env["DATABASE_URL"], f"cadence_bench_ab_{name}")


if __name__ == "__main__":
    sys.exit(main())
