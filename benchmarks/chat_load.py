"""Chat under load, against the running server with the offline provider, beside a bare ASGI floor.

    .venv/bin/python benchmarks/chat_load.py [--clients 1,20,100] [--requests 300]
        [--workers 1] [--ws-conversations 500] [--ws-messages 5] [--ws-per-key 5]
        [--max-seconds 540]

On a scratch database (cadence_bench_chat, dropped at the end): one organization with its owner's
API key, a ready offline orchestrator, and one member API key per `--ws-per-key` WebSocket
conversations (the WebSocket phase's users). Starts the real server (uvicorn
cadence_site.asgi:application, lifespan on, `--workers` processes) and, on the same uvicorn with
one worker and its own port, benchmarks/bare_stream_app.py: the offline provider streamed as
OpenAI SSE with no authentication, tenancy or storage. Then:

(a) POST /v1/chat/completions with the owner's key, non-stream and stream, at each client count
    (keep-alive HTTP/1.1 clients on raw asyncio streams, SSE parsed here): requests/s, p50/p99
    latency, time to first token (first non-empty content delta), and the server's CPU per request;
(b) WebSocket conversations, all open at once (connected in batches, a ticket each), each sending
    its messages one after another: p50/p99 time to first `token` frame and to `done`, messages
    lost (no `done`, or a stored reply that is not complete with the expected text, checked through
    GET .../messages/ for every conversation afterwards). `--ws-conversations 0` skips this phase.

Many users, not one: the product's per-principal limits (tenants/limits/enforce.py: WebSocket
tickets and frames per minute per key) are kept as shipped, so the conversations are spread over
member keys, `--ws-per-key` each (100 keys for 500 conversations): each conversation is created
with its key (conversations are private to their owner), its socket's ticket is taken with that
key, and its stored replies are read back with it. The HTTP phase uses the owner's key alone (the
benchmark's plan sets the request limit far above what it sends).

Workers: `--workers 2` serves Cadence with `uvicorn --workers 2`; `--workers 1,2` starts one
Cadence server per count, all at once on their own ports, and measures them interleaved at each
level (bare, 1 worker, 2 workers), then runs the WebSocket phase on each; it prints each count's
req/s against the first count's (target for 2 workers against 1: >= 1.7x). To compare throughput
alone: `--workers 1,2 --clients 20,100 --ws-conversations 0`. The bare floor stays one worker.

Targets: streaming req/s at 20 clients >= 50% of the bare app's; p99 time to first token <= 50 ms at
100 clients (streaming); 0 messages lost; with 2 workers, req/s >= 1.7x one worker's.

Reading the figures: the load generator is one Python process on the same machine, so when the
"box cpu" column reads ~100% (the bare app's rows), the floor is the generator's limit and the real
bare figure is higher; and two workers can only beat one when the machine has a free core (its 2
cores are shared with the generator, PostgreSQL, Redis and anything else running). "srv ms/req" is
the server's own CPU per request: the uvicorn process and all its descendants (the workers), all
their threads; "srv cpu" is that CPU as a share of one core (above 100% with several workers).
PostgreSQL's and Redis's CPU are not in it. The servers' logs go to temporary files, summarized at
the end (message counts), so a failure under load shows up as a count rather than a flood.

Measured 2026-12-06 (a later session's machine, faster than the one before), the issue's
command `--clients 1,20,100 --ws-conversations 500 --ws-messages 5` on main, two runs: srv ms/req
stream 1 / 20 / 100 clients 5.43 / 4.93 / 4.87 and 7.07 / 5.00 / 5.07, json 5.80 / 5.80 / 4.90
and 5.77 / 4.73 / 4.83; WebSocket 7.95 and 9.72 ms of server CPU per message at 500
conversations, 0 of 2,500 lost. Single runs swing by 20-30%, so changes were judged on
interleaved pairs: this script's WebSocket phase run from each checkout in turn (the previous
session's last commit 58c255e: 9.26 / 10.34 ms a message; main: 8.64 / 8.84), and
benchmarks/ab_trees.py for /v1. On /v1 the pairs disagreed: with pg_stat_statements loaded in
PostgreSQL (track = all, for profiling) main used 9-15% less server CPU than 58c255e (stream, 1
and 20 clients); without it, at the end of the session, the two were the same within noise
(stream at 20 clients 5.33 against 5.93, at 1 client 7.05 against 7.25, json 4.35 against 4.45).
PostgreSQL's own CPU per streamed request at 20 clients is 1.7-2.0 ms with the turn's
statements prepared (cadence_site/prepared.py), 2.3-2.5 with CADENCE_DB_PREPARE=false. Later the
same day (another session), the issue's command on main: stream 1 / 20 / 100 clients 6.17 /
4.27 / 3.77 ms, json 4.67 / 3.50 / 3.40, WebSocket 6.86 ms a message, 0 of 2,500 lost; the
same command swung 30% between runs minutes apart, so that session judged changes by
benchmarks/ab_instructions.py (instructions per request under callgrind, repeatable to ~2%:
streamed /v1 at 1 client 13.92 M before, 12.34 M after) and by interleaved ab_trees.py pairs
(stream at 20 clients 4.80 -> 4.18 ms, json 4.07 -> 3.45). The next session (2026-12-07),
the issue's command, two runs at its end: stream 1 / 20 / 100 clients 4.23 / 2.93 / 2.87 and
3.97 / 2.93 / 2.93 ms, json 4.13 / 2.80 / 2.83 and 3.93 / 2.80 / 2.73, WebSocket 5.32 and 5.22
ms a message, 0 of 2,500 lost; interleaved ab_trees.py pairs against that session's start
(e704fc8): stream 4.63 -> 3.87 (1 client), 3.47 -> 2.72 (20), 3.50 -> 2.97 (100), json at 20
3.43 -> 2.90. It cut round trips, not Python (callgrind counts 2% more instructions): a turn's
write in one batch with its BEGIN and COMMIT (cadence_site/pipelined.py), proofs sequenced
together (engine/trust/turns.py). The session after (also 2026-12-07), the issue's command at
its start (6b9a703) and end, two runs at the end: stream 1 / 20 / 100 clients 4.77 / 2.73 /
2.47 -> 2.83 / 2.30 / 2.03 and 2.80 / 2.13 / 2.00 ms, json 4.90 / 2.67 / 2.60 -> 2.57 / 2.27 /
2.37 and 2.57 / 2.07 / 2.30, WebSocket 5.13 -> 3.96 and 4.02 ms a message, 0 of 2,500 lost;
stream req/s at 1 client 106 -> 232 and 248 (p50 8.75 -> 4.06 ms). What moved it: a pipelined
batch written to the socket once, not once per statement (cadence_site/pipelined.py), and a
run's end on the server's loop no longer waiting 5 ms and a Redis round trip for its feed
frames (engine/runs/live.py `serve_lasting`). Earlier sessions' figures are in git history. What moved it,
across sessions: a turn's write, proof and usage in one round trip; API keys resolved once per
process and kept until the database notifies a change (tenants/access_watch.py); three thread
hops per turn instead of five; a chat turn's begin without ORM query building; sockets that keep
their conversation while nothing that decides it changes; the stream hub's read packed once per
stream; one fan-out writer per loop for chat frames; prepared statements (PostgreSQL's CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

from _setup import ROOT, drop_scratch_database, percentile, use_scratch_database

DB_NAME = "cadence_bench_chat"
ORG_SLUG = "chatload"
ORCHESTRATOR = "chatload"
REPLY_PREFIX = "Offline model. You said: "


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not start")


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of a server: the process and all its descendants (uvicorn's workers), all threads.

    Each process counts its own user + system time and that of its reaped children, so a worker
    that exits (and is reaped by its parent) keeps counting through its parent."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _wait_idle(pid: int, timeout: float = 60, quiet: float = 0.05) -> None:
    """Until the server's process tree uses less than `quiet` CPU seconds over one second (every
    worker has finished starting), or `timeout`."""
    deadline = time.monotonic() + timeout
    before = _cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        after = _cpu_seconds(pid)
        if after - before < quiet:
            return
        before = after


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _log_summary(path: str, top: int = 8) -> list[str]:
    """The server's log lines counted by level, logger and message (JSON logs), or first words."""
    counts: Counter[str] = Counter()
    with open(path, errors="replace") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                if line.startswith(("ERROR", "WARNING", "CRITICAL")):
                    counts[line[:100]] += 1
                continue
            if isinstance(entry, dict) and "message" in entry:
                detail = entry.get("error") or ""
                message = str(entry["message"]).split("\n")[0][:90]
                counts[f"{entry.get('level')} {entry.get('logger')}: {message} {detail}"[:160]] += 1
    return [f"{n:>8} x {text}" for text, n in counts.most_common(top)]


def _start_server(
    app: str,
    port: int,
    env: dict,
    log,
    app_dir: str | None = None,
    workers: int = 1,
    tree: str | None = None,
) -> subprocess.Popen:
    """uvicorn serving `app`; `tree`: another checkout, served by its own .venv from its root."""
    python = f"{tree}/.venv/bin/python" if tree else sys.executable
    command = [python, "-m", "uvicorn", app]
    if app_dir:
        command += ["--app-dir", app_dir]
    command += [
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--lifespan", "on",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=tree or ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


# --- a keep-alive HTTP/1.1 client on raw asyncio streams ---------------------------------------


class HttpClient:
    """One connection, reopened after an error or a `Connection: close`."""

    def __init__(self, port: int, key: str | None = None):
        self.port = port
        self.auth = f"Authorization: Bearer {key}\r\n" if key else ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(
        self,
        method: str,
        path: str,
        payload: dict | None = None,
        accept: str = "application/json",
        on_data=None,
        key: str | None = None,
    ) -> tuple[int, bytes]:
        """Status and body; `on_data(piece)` sees each piece of the body as it arrives; `key`
        authenticates this request instead of the client's own key."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        body = json.dumps(payload).encode() if payload is not None else b""
        auth = self.auth if key is None else f"Authorization: Bearer {key}\r\n"
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Accept: {accept}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        try:
            self.writer.write(head.encode() + body)
            reader = self.reader
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionError("connection closed before a response")
            status = int(status_line.split()[1])
            length, chunked, close = None, False, False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value:
                    chunked = True
                elif name == b"connection" and value == b"close":
                    close = True
            pieces: list[bytes] = []
            if chunked:
                while True:
                    size = int((await reader.readline()).split(b";")[0], 16)
                    if size == 0:
                        while (await reader.readline()) not in (b"\r\n", b""):
                            pass
                        break
                    piece = (await reader.readexactly(size + 2))[:-2]
                    pieces.append(piece)
                    if on_data is not None:
                        on_data(piece)
            else:
                piece = await reader.readexactly(length) if length is not None else b""
                pieces.append(piece)
                if on_data is not None:
                    on_data(piece)
            if close:
                self.close()
            return status, b"".join(pieces)
        except BaseException:
            self.close()
            raise


class SseReader:
    """Server-sent events from body pieces: OpenAI chunks, or the REST endpoint's token/done events."""

    def __init__(self):
        self.buffer = b""
        self.text: list[str] = []
        self.first_token: float | None = None
        self.finished = False
        self.final: dict | None = None

    def feed(self, piece: bytes) -> None:
        now = time.perf_counter()
        self.buffer += piece
        while b"\n\n" in self.buffer:
            raw, self.buffer = self.buffer.split(b"\n\n", 1)
            event, data = None, []
            for line in raw.split(b"\n"):
                if line.startswith(b"event:"):
                    event = line[6:].strip().decode()
                elif line.startswith(b"data:"):
                    data.append(line[5:].strip())
            if not data:
                continue  # a comment (keepalive)
            payload = b"\n".join(data)
            if payload == b"[DONE]":
                self.finished = True
                continue
            obj = json.loads(payload)
            if event is None:  # OpenAI chunk
                if "error" in obj:
                    raise ValueError(f"error chunk: {obj['error']}")
                for choice in obj.get("choices") or ():
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        self.first_token = self.first_token or now
                        self.text.append(delta)
            elif event == "token":
                self.first_token = self.first_token or now
                self.text.append(obj.get("delta", ""))
            elif event == "done":
                self.finished, self.final = True, obj


# --- (a) HTTP load ------------------------------------------------------------------------------


@dataclass
class Target:
    """What one request is: the OpenAI surface (Cadence or bare), or the REST messages endpoint."""

    kind: str  # "v1" or "rest"
    port: int
    key: str | None
    conversations: list[str] = field(default_factory=list)  # rest: one per client

    async def call(self, client: HttpClient, index: int, content: str, stream: bool):
        """(reply text, time of the first token or None)."""
        if self.kind == "v1":
            path = "/v1/chat/completions"
            payload = {
                "model": ORCHESTRATOR,
                "messages": [{"role": "user", "content": content}],
                "stream": stream,
            }
        else:
            path = f"/api/v1/orgs/{ORG_SLUG}/conversations/{self.conversations[index]}/messages/"
            payload = {"content": content}
        if not stream:
            status, body = await client.request("POST", path, payload)
            if status not in (200, 201):
                raise ValueError(f"HTTP {status}: {body[:200]!r}")
            obj = json.loads(body)
            if self.kind == "v1":
                return obj["choices"][0]["message"]["content"], None
            return obj["reply"]["content"], None
        sse = SseReader()
        status, body = await client.request(
            "POST", path, payload, accept="text/event-stream", on_data=sse.feed
        )
        if status != 200:
            raise ValueError(f"HTTP {status}: {body[:200]!r}")
        if not sse.finished:
            raise ValueError("stream ended without [DONE]/done")
        if sse.final is not None and sse.final.get("status") != "complete":
            raise ValueError(f"reply {sse.final.get('status')}: {sse.final.get('error')}")
        return "".join(sse.text), sse.first_token


async def _load(
    target: Target, server_pid: int, clients: int, total: int, stream: bool, limit_s: float
) -> dict:
    per_client = max(1, math.ceil(total / clients))
    latencies: list[float] = []
    ttfts: list[float] = []
    errors: Counter[str] = Counter()
    first_error: list[str] = []

    async def one(index: int, count: int, record: bool) -> None:
        client = HttpClient(target.port, target.key)
        try:
            for j in range(count):
                content = f"load {clients} {index} {j} {'s' if stream else 'n'}"
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(limit_s):
                        text, first = await target.call(client, index, content, stream)
                    if text != REPLY_PREFIX + content:
                        raise ValueError(f"unexpected reply {text[:120]!r}")
                except (TimeoutError, OSError, EOFError, ValueError, KeyError) as exc:
                    if record:
                        errors[type(exc).__name__] += 1
                        if not first_error:
                            first_error.append(f"{type(exc).__name__}: {exc}")
                    continue
                if record:
                    latencies.append(time.perf_counter() - started)
                    if first is not None:
                        ttfts.append(first - started)
        finally:
            client.close()

    await asyncio.gather(*(one(i, 2, False) for i in range(clients)))  # warm-up
    cpu_before, machine_before = _cpu_seconds(server_pid), _machine_busy()
    started = time.perf_counter()
    await asyncio.gather(*(one(i, per_client, True) for i in range(clients)))
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds(server_pid) - cpu_before
    machine_after = _machine_busy()
    busy = (machine_after[0] - machine_before[0]) / max(1, machine_after[1] - machine_before[1])
    ok = len(latencies)
    return {
        "ok": ok,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "first_error": first_error[0] if first_error else "",
        "rps": ok / elapsed if elapsed else 0.0,
        "p50": percentile(latencies, 50) * 1000 if latencies else math.nan,
        "p99": percentile(latencies, 99) * 1000 if latencies else math.nan,
        "ttft50": percentile(ttfts, 50) * 1000 if ttfts else math.nan,
        "ttft99": percentile(ttfts, 99) * 1000 if ttfts else math.nan,
        "cpu_ms": cpu * 1000 / max(1, ok + sum(errors.values())),
        "cpu_util": cpu / elapsed if elapsed else 0.0,
        "machine_busy": busy,
    }


async def _create_conversations(port: int, owners: list[str], parallel: int = 20) -> list[str]:
    """One conversation per entry of `owners`, each created with that API key (a conversation is
    private to the key that created it); their ids in the same order."""
    count = len(owners)
    ids: list[str | None] = [None] * count

    async def worker(offset: int) -> None:
        client = HttpClient(port)
        try:
            for i in range(offset, count, parallel):
                for _attempt in range(3):
                    try:
                        async with asyncio.timeout(30):
                            status, body = await client.request(
                                "POST",
                                f"/api/v1/orgs/{ORG_SLUG}/conversations/",
                                {"orchestrator": ORCHESTRATOR},
                                key=owners[i],
                            )
                        if status == 201:
                            ids[i] = json.loads(body)["id"]
                            break
                    except (TimeoutError, OSError, EOFError, ValueError):
                        pass
        finally:
            client.close()

    await asyncio.gather(*(worker(k) for k in range(min(parallel, count))))
    missing = sum(1 for i in ids if i is None)
    if missing:
        raise RuntimeError(f"{missing} conversations could not be created")
    return ids  # type: ignore[return-value]


# --- (b) WebSocket conversations ----------------------------------------------------------------


@dataclass
class WsStats:
    connected: int = 0
    connect_failed: int = 0
    connect_errors: Counter = field(default_factory=Counter)
    sent: int = 0
    done: int = 0
    not_complete: int = 0
    no_done: Counter = field(default_factory=Counter)
    ttft: list[float] = field(default_factory=list)
    to_done: list[float] = field(default_factory=list)
    sent_contents: dict[str, list[str]] = field(default_factory=dict)
    done_ok: set[str] = field(default_factory=set)


async def _ws_connect_all(port: int, owner_of: dict[str, str], batch: int, stats):
    """Connections in batches: a ticket each (single use, 30 s) from the conversation's own key,
    then the handshakes."""
    from websockets.asyncio.client import connect

    conversation_ids = list(owner_of)
    sockets: dict[str, object] = {}
    tickets = [HttpClient(port) for _ in range(10)]

    async def ticket_for(client: HttpClient, key: str) -> str:
        async with asyncio.timeout(30):
            status, body = await client.request(
                "POST", f"/api/v1/orgs/{ORG_SLUG}/ws-tickets/", key=key
            )
        if status != 201:
            raise ValueError(f"ticket: HTTP {status}: {body[:120]!r}")
        return json.loads(body)["ticket"]

    async def open_one(conversation_id: str, client: HttpClient) -> None:
        try:
            ticket = await ticket_for(client, owner_of[conversation_id])
            sockets[conversation_id] = await connect(
                f"ws://127.0.0.1:{port}/ws/orgs/{ORG_SLUG}/conversations/{conversation_id}/"
                f"?ticket={ticket}",
                origin="http://127.0.0.1",
                compression=None,
                proxy=None,
                open_timeout=60,
                ping_interval=None,
                close_timeout=5,
                max_queue=None,
            )
            stats.connected += 1
        except Exception as exc:
            stats.connect_failed += 1
            stats.connect_errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1

    try:
        for start in range(0, len(conversation_ids), batch):
            chunk = conversation_ids[start : start + batch]
            # At most one ticket request per HTTP connection at a time.
            groups = [chunk[k :: len(tickets)] for k in range(len(tickets))]

            async def run_group(ids: list[str], client: HttpClient) -> None:
                for cid in ids:
                    await open_one(cid, client)

            await asyncio.gather(*(run_group(g, c) for g, c in zip(groups, tickets, strict=True)))
    finally:
        for client in tickets:
            client.close()
    return sockets


async def _ws_conversation(ws, conversation_id: str, messages: int, limit_s: float, stats):
    sent = stats.sent_contents.setdefault(conversation_id, [])
    for m in range(messages):
        content = f"ws {conversation_id} message {m}"
        started = time.perf_counter()
        first: float | None = None
        reply_to: str | None = None
        text: list[str] = []
        try:
            await ws.send(json.dumps({"type": "message", "content": content}))
        except Exception as exc:
            stats.no_done[f"send failed: {type(exc).__name__}"] += 1
            stats.sent += 1
            sent.append(content)
            continue
        stats.sent += 1
        sent.append(content)
        try:
            async with asyncio.timeout(limit_s):
                while True:
                    frame = json.loads(await ws.recv())
                    kind = frame.get("type")
                    if kind == "message.created":
                        reply_to = frame.get("reply_to")
                    elif kind == "token":
                        if reply_to is None or frame.get("message_id") == reply_to:
                            first = first or time.perf_counter()
                            text.append(frame.get("delta", ""))
                    elif kind == "error" and not frame.get("message_id"):
                        stats.no_done[f"error frame: {frame.get('code')}"] += 1
                        break
                    elif kind == "done" and (reply_to is None or frame["message_id"] == reply_to):
                        now = time.perf_counter()
                        stats.done += 1
                        stats.to_done.append(now - started)
                        stats.ttft.append((first or now) - started)
                        if frame.get("status") == "complete" and (
                            frame.get("content") == REPLY_PREFIX + content
                        ):
                            stats.done_ok.add(content)
                        else:
                            stats.not_complete += 1
                        break
        except TimeoutError:
            stats.no_done["timeout"] += 1
        except Exception as exc:
            stats.no_done[f"{type(exc).__name__}"] += 1
            return  # the socket is gone; the remaining messages are never sent


async def _ws_verify(
    port: int, owner_of: dict[str, str], stats: WsStats, parallel: int = 10
) -> set[str]:
    """Sent messages whose stored reply is complete with the expected text (read with the key
    that owns the conversation)."""
    items = list(stats.sent_contents.items())
    stored: set[str] = set()

    async def worker(offset: int) -> None:
        client = HttpClient(port)
        try:
            for conversation_id, contents in items[offset::parallel]:
                replies: set[str] = set()
                try:
                    async with asyncio.timeout(60):
                        status, body = await client.request(
                            "GET",
                            f"/api/v1/orgs/{ORG_SLUG}/conversations/{conversation_id}/messages/"
                            "?limit=100",
                            key=owner_of[conversation_id],
                        )
                    if status == 200:
                        replies = {
                            m["content"]
                            for m in json.loads(body)["results"]
                            if m["role"] == "assistant" and m["status"] == "complete"
                        }
                except (TimeoutError, OSError, EOFError, ValueError):
                    pass
                stored.update(c for c in contents if REPLY_PREFIX + c in replies)
        finally:
            client.close()

    await asyncio.gather(*(worker(k) for k in range(parallel)))
    return stored


def _owners(keys: list[str], conversations: int, per_key: int) -> list[str]:
    """The key of each conversation: `per_key` conversations per key, as many users would."""
    return [keys[min(i // per_key, len(keys) - 1)] for i in range(conversations)]


async def _websockets(port: int, keys: list[str], server_pid: int, args) -> dict:
    stats = WsStats()
    started = time.perf_counter()
    owners = _owners(keys, args.ws_conversations, args.ws_per_key)
    ids = await _create_conversations(port, owners)
    owner_of = dict(zip(ids, owners, strict=True))
    created = time.perf_counter()
    sockets = await _ws_connect_all(port, owner_of, args.ws_batch, stats)
    connected = time.perf_counter()
    cpu_before, machine_before = _cpu_seconds(server_pid), _machine_busy()
    tasks = [
        asyncio.ensure_future(
            _ws_conversation(ws, cid, args.ws_messages, args.ws_message_timeout, stats)
        )
        for cid, ws in sockets.items()
    ]
    if tasks:
        finished, pending = await asyncio.wait(tasks, timeout=args.ws_phase_timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            stats.no_done["conversations cut by the phase timeout"] += len(pending)
    chatted = time.perf_counter()
    cpu = _cpu_seconds(server_pid) - cpu_before
    machine_after = _machine_busy()
    busy = (machine_after[0] - machine_before[0]) / max(1, machine_after[1] - machine_before[1])
    await asyncio.gather(*(ws.close() for ws in sockets.values()), return_exceptions=True)
    unsent = (len(ids) - len(sockets)) * args.ws_messages
    stored = await _ws_verify(port, owner_of, stats)
    sent = [c for contents in stats.sent_contents.values() for c in contents]
    stored_missing = sum(1 for c in sent if c not in stored)
    # Lost: no `done` with the complete expected reply over the socket, or no such stored reply.
    lost = sum(1 for c in sent if c not in stats.done_ok or c not in stored)
    return {
        "conversations": len(ids),
        "keys": len(set(owners)),
        "connected": stats.connected,
        "connect_failed": stats.connect_failed,
        "connect_errors": dict(stats.connect_errors),
        "sent": stats.sent,
        "unsent": unsent,
        "done": stats.done,
        "no_done": dict(stats.no_done),
        "not_complete": stats.not_complete,
        "stored_missing": stored_missing,
        "lost": lost,
        "ttft50": percentile(stats.ttft, 50) * 1000 if stats.ttft else math.nan,
        "ttft99": percentile(stats.ttft, 99) * 1000 if stats.ttft else math.nan,
        "done50": percentile(stats.to_done, 50) * 1000 if stats.to_done else math.nan,
        "done99": percentile(stats.to_done, 99) * 1000 if stats.to_done else math.nan,
        "create_s": created - started,
        "connect_s": connected - created,
        "chat_s": chatted - connected,
        "msgs_per_s": stats.done / (chatted - connected) if chatted > connected else 0.0,
        "cpu_ms": cpu * 1000 / max(1, stats.sent),
        "cpu_util": cpu / (chatted - connected) if chatted > connected else 0.0,
        "machine_busy": busy,
    }


# --- setup and report ---------------------------------------------------------------------------


def _setup_org(user_keys: int) -> tuple[str, list[str]]:
    """One organization on a generous plan, a ready offline orchestrator, its owner's API key
    (the HTTP phase's) and `user_keys` member keys (the WebSocket phase's many users: the
    per-principal ticket and frame limits of tenants/limits/enforce.py stay as shipped)."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django_tenants.utils import schema_context

    from orchestrators.models import OrchestratorInstance
    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build
    from tenants.models import Plan
    from tenants.services import api_key_create, organization_create

    call_command("migrate", interactive=False, verbosity=0)
    owner = get_user_model().objects.create_user(
        username="bench-owner", email="bench-owner@example.test"
    )
    plan = Plan.objects.create(
        slug="chat-load",
        name="Chat load",
        requests_per_minute=10_000_000,
        max_api_keys=max(1000, user_keys + 10),
    )
    org = organization_create(
        name="Chat load", slug=ORG_SLUG, owner_email="bench-owner@example.test", plan=plan
    )
    with schema_context(org.organization.schema_name):
        config = llm_config_create(name="offline", provider="offline", model="cadence-offline")
        instance = orchestrator_create(
            slug=ORCHESTRATOR, name="Chat load", llm_config=config, tier="hot"
        )
        instance.refresh_from_db()
        if instance.status != OrchestratorInstance.Status.READY:
            instance_build(
                schema_name=org.organization.schema_name,
                instance_id=str(instance.id),
                expected_hash=instance.config_hash,
            )
            instance.refresh_from_db()
        if instance.status != OrchestratorInstance.Status.READY:
            raise RuntimeError(f"orchestrator is {instance.status}: {instance.status_message}")
    user_secrets = [
        api_key_create(
            org=org.organization,
            name=f"chat load user {n}",
            role="member",
            creator_role="owner",
            created_by=owner,
        )[1]
        for n in range(user_keys)
    ]
    return org.api_key_secret, user_secrets


async def _probe_v1(port: int, key: str) -> bool:
    client = HttpClient(port, key)
    try:
        async with asyncio.timeout(30):
            status, _ = await client.request(
                "POST",
                "/v1/chat/completions",
                {"model": ORCHESTRATOR, "messages": [{"role": "user", "content": "probe"}]},
            )
        return status == 200
    finally:
        client.close()


def _fmt(value: float, width: int = 8, digits: int = 1) -> str:
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:{width}.{digits}f}"


def _label(workers: int) -> str:
    return "cadence" if workers == 1 else f"cadence×{workers}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,20,100", help="HTTP client counts")
    parser.add_argument("--requests", type=int, default=300, help="HTTP requests per measurement")
    parser.add_argument("--request-timeout", type=float, default=60)
    parser.add_argument(
        "--workers",
        default="1",
        help="uvicorn worker processes of the Cadence server; a list (1,2) starts one server per"
        " count and measures them side by side, with each count's throughput against the first's",
    )
    parser.add_argument("--ws-conversations", type=int, default=500, help="0: no WebSocket phase")
    parser.add_argument("--ws-messages", type=int, default=5)
    parser.add_argument(
        "--ws-per-key", type=int, default=5, help="WebSocket conversations per API key (user)"
    )
    parser.add_argument("--ws-batch", type=int, default=50, help="WebSockets opened per batch")
    parser.add_argument("--ws-message-timeout", type=float, default=120)
    parser.add_argument("--ws-phase-timeout", type=float, default=300)
    parser.add_argument("--max-seconds", type=float, default=540, help="skip HTTP levels after")
    args = parser.parse_args()
    client_counts = [int(c) for c in args.clients.split(",") if c.strip()]
    worker_counts = list(dict.fromkeys(int(w) for w in args.workers.split(",") if w.strip()))
    if not worker_counts or min(worker_counts) < 1:
        parser.error("--workers: one or more counts >= 1")
    if args.ws_per_key < 1:
        parser.error("--ws-per-key must be >= 1")
    user_keys = math.ceil(max(0, args.ws_conversations) / args.ws_per_key)
    began = time.monotonic()

    os.environ["CADENCE_CELERY_EAGER"] = "1"  # the build runs here, not on someone's worker
    os.environ.setdefault("CADENCE_CACHE_PREFIX", "cadence-bench-chat")
    original = use_scratch_database(DB_NAME)
    import logging

    import django

    django.setup()
    logging.disable(logging.WARNING)
    from tenants.limits.enforce import scope_limit

    per_key_frames = args.ws_per_key * args.ws_messages
    if args.ws_conversations > 0 and (
        args.ws_per_key > scope_limit("tickets") or per_key_frames > scope_limit("frames")
    ):
        print(
            f"warning: {args.ws_per_key} conversations x {args.ws_messages} messages per key"
            f" exceed a key's {scope_limit('tickets')} tickets or {scope_limit('frames')} frames"
            " per minute (tenants/limits/enforce.py): lower --ws-per-key",
            flush=True,
        )

    servers: list[subprocess.Popen] = []
    logs = {
        name: tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in finally
            "w+", prefix=f"chat_load_{name}_", suffix=".log", delete=False
        )
        for name in ["bare", *(f"cadence{w}w" for w in worker_counts)]
    }
    try:
        print(
            f"setting up: migrate, organization, orchestrator, {user_keys} user API keys...",
            flush=True,
        )
        key, ws_keys = _setup_org(user_keys)
        env = dict(os.environ, CADENCE_LOG_LEVEL="WARNING")
        env.pop("CADENCE_CELERY_EAGER", None)
        bare_port = _free_port()
        bare = _start_server(
            "bare_stream_app:app", bare_port, env, logs["bare"], app_dir="benchmarks"
        )
        servers.append(bare)
        # One Cadence server per worker count, all up at once: their levels interleave, so a
        # change in the machine's load touches every count alike.
        cadences: dict[int, tuple[subprocess.Popen, int]] = {}
        for w in worker_counts:
            port = _free_port()
            process = _start_server(
                "cadence_site.asgi:application", port, env, logs[f"cadence{w}w"], workers=w
            )
            servers.append(process)
            cadences[w] = (process, port)
        _wait_for(bare_port, bare)
        kinds = set()
        for process, port in cadences.values():
            _wait_for(port, process)
            kinds.add("v1" if asyncio.run(_probe_v1(port, key)) else "rest")
        for process in servers:
            _wait_idle(process.pid)
        kind = "v1" if kinds == {"v1"} else "rest"
        if kind == "rest":
            print(
                "/v1/chat/completions is not served: measuring POST .../conversations/<id>/messages/"
                " (JSON and Accept: text/event-stream) instead",
                flush=True,
            )
        http: dict[tuple[str, int, str, int], dict] = {}
        for stream in (False, True):
            mode = "stream" if stream else "json"
            for clients in client_counts:
                if time.monotonic() - began > args.max_seconds:
                    print(f"  time budget spent: skipping {mode} at {clients} clients", flush=True)
                    continue
                runs = [("bare", 1, bare_port, bare.pid)] + [
                    ("cadence", w, port, process.pid) for w, (process, port) in cadences.items()
                ]
                for name, workers, port, pid in runs:
                    target = Target(kind if name == "cadence" else "v1", port, key)
                    if target.kind == "rest":
                        target.conversations = asyncio.run(
                            _create_conversations(port, [key] * clients)
                        )
                    r = asyncio.run(
                        _load(target, pid, clients, args.requests, stream, args.request_timeout)
                    )
                    http[(name, workers, mode, clients)] = r
                    label = _label(workers) if name == "cadence" else name
                    print(
                        f"  {label:>9} {mode:>6} {clients:>3} clients: {r['rps']:7.1f} req/s"
                        f"  p50 {_fmt(r['p50'], 0)} ms  p99 {_fmt(r['p99'], 0)} ms"
                        f"  ttft p99 {_fmt(r['ttft99'], 0)} ms  errors {r['errors']}"
                        + (f" ({r['first_error'][:160]})" if r["errors"] else ""),
                        flush=True,
                    )

        ws: dict[int, dict] = {}
        if args.ws_conversations > 0:
            for w, (process, port) in cadences.items():
                print(
                    f"  websockets ({_label(w)}): {args.ws_conversations} conversations x"
                    f" {args.ws_messages} messages, {user_keys} API keys...",
                    flush=True,
                )
                ws[w] = asyncio.run(_websockets(port, ws_keys, process.pid, args))

        surface = "/v1/chat/completions" if kind == "v1" else "REST .../messages/ (no /v1 yet)"
        print()
        print(
            f"(a) HTTP: {surface}; bare = benchmarks/bare_stream_app.py; {args.requests} requests"
        )
        print(
            f"{'server':>8} {'wk':>2} {'mode':>6} {'clients':>7} {'req/s':>8} {'p50 ms':>8}"
            f" {'p99 ms':>8} {'ttft50':>8} {'ttft99':>8} {'srv ms/req':>10} {'srv cpu':>7}"
            f" {'box cpu':>7} {'errors':>6}"
        )
        for (name, workers, mode, clients), r in http.items():
            print(
                f"{name:>8} {workers:>2} {mode:>6} {clients:>7} {_fmt(r['rps'])}"
                f" {_fmt(r['p50'], 8, 2)} {_fmt(r['p99'], 8, 2)} {_fmt(r['ttft50'], 8, 2)}"
                f" {_fmt(r['ttft99'], 8, 2)} {_fmt(r['cpu_ms'], 10, 2)} {r['cpu_util']:7.0%}"
                f" {r['machine_busy']:7.0%} {r['errors']:>6}"
            )
        print(
            "  wk: uvicorn worker processes; srv ms/req: the server's CPU per request (the uvicorn"
            " process and all its workers); srv cpu: of one core; box cpu: all"
            f" {os.cpu_count()} cores (load generator and PostgreSQL included)"
        )
        print()
        for w, result in ws.items():
            _print_ws(result, args, w)
            print()
        _print_targets(http, ws, worker_counts, client_counts)
        print()
        for name, handle in logs.items():
            handle.flush()
            lines = _log_summary(handle.name)
            print(f"{name} server log ({handle.name}): {'nothing' if not lines else ''}")
            for line in lines:
                print(line)
        print(f"\ntotal {time.monotonic() - began:.0f} s")
    finally:
        for process in servers:
            _stop(process)
        for handle in logs.values():
            handle.close()
        drop_scratch_database(original, DB_NAME)


def _print_ws(ws: dict, args, workers: int) -> None:
    print(
        f"(b) WebSocket, {_label(workers)} ({workers} worker{'s' if workers > 1 else ''}):"
        f" {ws['conversations']} conversations x {args.ws_messages} messages on {ws['keys']}"
        f" API keys ({args.ws_per_key} conversations each; created in {ws['create_s']:.1f} s,"
        f" connected in {ws['connect_s']:.1f} s in batches of {args.ws_batch}, chatted in"
        f" {ws['chat_s']:.1f} s)"
    )
    print(
        f"  connected {ws['connected']}  failed {ws['connect_failed']}"
        + (f" {ws['connect_errors']}" if ws["connect_errors"] else "")
    )
    print(
        f"  sent {ws['sent']}  done {ws['done']}  not sent (no socket) {ws['unsent']}"
        f"  done but not complete {ws['not_complete']}  stored not complete {ws['stored_missing']}"
        + (f"  no done: {ws['no_done']}" if ws["no_done"] else "")
    )
    print(
        f"  time to first token p50 {_fmt(ws['ttft50'], 0)} ms  p99 {_fmt(ws['ttft99'], 0)} ms;"
        f"  to done p50 {_fmt(ws['done50'], 0)} ms  p99 {_fmt(ws['done99'], 0)} ms;"
        f"  {ws['msgs_per_s']:.1f} replies/s"
    )
    print(
        f"  server CPU {ws['cpu_ms']:.2f} ms per message sent, {ws['cpu_util']:.0%} of one core;"
        f" box cpu {ws['machine_busy']:.0%}"
    )


def _print_targets(
    http: dict, ws: dict[int, dict], worker_counts: list[int], client_counts: list[int]
) -> None:
    base = 1 if 1 in worker_counts else worker_counts[0]
    where = "" if base == 1 else f" ({_label(base)}: no 1-worker server in --workers)"
    stream20 = http.get(("cadence", base, "stream", 20)), http.get(("bare", 1, "stream", 20))
    if all(stream20):
        ratio = stream20[0]["rps"] / stream20[1]["rps"] if stream20[1]["rps"] else 0.0
        print(
            f"streaming req/s at 20 clients{where}: {stream20[0]['rps']:.1f} vs bare"
            f" {stream20[1]['rps']:.1f} = {ratio:.0%}   target >= 50%"
            f"   {'OK' if ratio >= 0.5 and not stream20[0]['errors'] else 'MISSED'}"
        )
    else:
        print("streaming req/s at 20 clients: not measured (20 not in --clients)")
    s100 = http.get(("cadence", base, "stream", 100))
    if s100:
        p99 = s100["ttft99"]
        print(
            f"p99 time to first token at 100 clients (stream){where}: {_fmt(p99, 0)} ms"
            f"   target <= 50 ms   {'OK' if p99 <= 50 and not s100['errors'] else 'MISSED'}"
        )
    else:
        print("p99 time to first token at 100 clients: not measured (100 not in --clients)")
    for w in worker_counts:
        if w == base:
            continue
        for mode in ("stream", "json"):
            for clients in client_counts:
                one, many = (
                    http.get(("cadence", base, mode, clients)),
                    http.get(("cadence", w, mode, clients)),
                )
                if not (one and many):
                    continue
                ratio = many["rps"] / one["rps"] if one["rps"] else 0.0
                verdict = ""
                if base == 1 and w == 2:
                    good = ratio >= 1.7 and not many["errors"]
                    verdict = f"   target >= 1.7x   {'OK' if good else 'MISSED'}"
                print(
                    f"{w} workers vs {base}, {mode} at {clients} clients: {many['rps']:.1f} vs"
                    f" {one['rps']:.1f} req/s = {ratio:.2f}x{verdict}"
                )
    if not ws:
        print("WebSocket messages lost: not measured (--ws-conversations 0)")
        return
    for w, result in ws.items():
        lost = result["lost"] + result["unsent"]
        print(
            f"WebSocket messages lost ({_label(w)}): {lost} of {result['sent'] + result['unsent']}"
            f"   target 0   {'OK' if lost == 0 and result['sent'] else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
