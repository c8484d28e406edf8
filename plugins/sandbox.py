"""Tenant code, run by `pydantic-monty` in worker subprocesses, never in this interpreter.

Monty interprets a Python subset in Rust, in `monty` worker processes the pool spawns with an
empty environment (no DATABASE_URL, no keys), no database connection and no file, network,
subprocess or import access: the only way out is the host functions passed per call, which are
the plugin's own declared tools. Every call has caps on time, memory, recursion depth and host
calls (`LIMITS`), plus a parent-side watchdog that kills a worker past `REQUEST_TIMEOUT`; a
breach fails the call with a clear `SandboxError`, and a dead worker is replaced by the pool.

One pool per process, created on first use. `feed_run` blocks, so it runs on a thread; host
functions the sandbox calls hop back to the caller's event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

LIMITS = {
    "max_feed_duration_secs": 2.0,
    "max_memory": 32 * 1024 * 1024,
    "max_recursion_depth": 200,
    "max_suspensions": 50,
    "max_total_sleep_secs": 0.0,
}
REQUEST_TIMEOUT = 10.0
MAX_OUTPUT_CHARS = 16_000
MAX_SOURCE_CHARS = 100_000
MAX_RESULT_BYTES = 256 * 1024

_pool = None
_lock = threading.Lock()


class SandboxError(Exception):
    def __init__(self, message: str, code: str = "sandbox_error"):
        super().__init__(message)
        self.message = message
        self.code = code


def _get_pool():
    global _pool
    with _lock:
        if _pool is None:
            from pydantic_monty import Monty

            pool = Monty(min_processes=1, max_processes=4, request_timeout=REQUEST_TIMEOUT)
            pool.__enter__()
            atexit.register(pool.__exit__, None, None, None)
            _pool = pool
        return _pool


def _describe(exc: Exception) -> SandboxError:
    from pydantic_monty import MontyCrashedError, MontyRuntimeError, MontySyntaxError

    if isinstance(exc, MontyCrashedError):
        reason = "timed out" if exc.timed_out else "crashed"
        return SandboxError(
            f"The sandbox worker {reason}; the call was stopped.", "sandbox_crashed"
        )
    if isinstance(exc, MontySyntaxError):
        return SandboxError(f"The code does not parse: {exc.display('msg')}", "sandbox_syntax")
    if isinstance(exc, MontyRuntimeError):
        text = exc.display("type-msg")
        code = "sandbox_error"
        if text.startswith("TimeoutError"):
            code = "sandbox_timeout"
        elif text.startswith("MemoryError"):
            code = "sandbox_memory"
        elif text.startswith("RecursionError"):
            code = "sandbox_recursion"
        return SandboxError(f"The code failed: {text[:2000]}", code)
    return SandboxError(f"The sandbox refused the call: {exc}"[:2000])


def _run_blocking(
    source: str, inputs: dict[str, Any], host: dict[str, Callable]
) -> tuple[Any, str]:
    from pydantic_monty import CollectString, MontyError

    output = CollectString(max_bytes=MAX_OUTPUT_CHARS * 4)
    try:
        with _get_pool().checkout(limits=LIMITS, script_name="plugin.py") as session:
            result = session.feed_run(
                source, inputs=inputs, external_lookup=host, print_callback=output
            )
    except MontyError as exc:
        raise _describe(exc) from None
    return result, output.output[:MAX_OUTPUT_CHARS]


async def run_code(
    source: str,
    *,
    inputs: dict[str, Any],
    host_functions: dict[str, Callable[..., Awaitable[Any]]] | None = None,
) -> dict[str, Any]:
    """Run `source` with `inputs` bound as globals; {"result", "output"} or SandboxError.

    Host functions are async callables of this loop; the sandbox calls them synchronously.
    """
    if len(source) > MAX_SOURCE_CHARS:
        raise SandboxError("The code is too long.", "sandbox_source_too_long")
    loop = asyncio.get_running_loop()

    def bridge(fn):
        def call(*args, **kwargs):
            return asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), loop).result(
                timeout=REQUEST_TIMEOUT
            )

        return call

    host = {name: bridge(fn) for name, fn in (host_functions or {}).items()}
    result, output = await asyncio.to_thread(_run_blocking, source, inputs, host)
    try:
        encoded = json.dumps(result)
    except (TypeError, ValueError):
        raise SandboxError(
            "The code's result is not JSON (dicts, lists, text, numbers).", "sandbox_result"
        ) from None
    if len(encoded) > MAX_RESULT_BYTES:
        raise SandboxError("The code's result is too large.", "sandbox_result")
    return {"result": result, "output": output}


def worker_pids() -> list[int]:
    """The pool's worker process ids (for tests that inspect what a worker holds)."""
    with _get_pool().checkout() as session:
        pid = session.worker_pid
    return [pid] if pid else []
