"""A local HTTP tool for the crash tests: counts the calls it gets per `Idempotency-Key`.

`hold_first`: the first call of each key waits until `release()` (a test kills the worker that
made it meanwhile: a step cut short). `delay`: seconds each call takes.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ToolServer:
    def __init__(self, *, delay: float = 0.0, hold_first: bool = False) -> None:
        self.delay, self.hold_first = delay, hold_first
        self.calls: Counter[str] = Counter()  # Idempotency-Key → calls received
        self.seen = threading.Event()  # set at every call
        self.released = threading.Event()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                key = self.headers.get("Idempotency-Key", "")
                with owner._lock:
                    owner.calls[key] += 1
                    first = owner.calls[key] == 1
                owner.seen.set()
                if first and owner.hold_first:
                    owner.released.wait(30)
                if owner.delay:
                    time.sleep(owner.delay)
                body = json.dumps({"ok": 1}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/charge"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ToolServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def release(self) -> None:
        self.released.set()

    def keys_of(self, run_id: str) -> dict[str, int]:
        with self._lock:
            return {k: n for k, n in self.calls.items() if k.startswith(f"{run_id}:")}
