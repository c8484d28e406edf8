"""Structured run logs: every `logging` line emitted while a run runs belongs to that run.

A note, a tool or a provider logs as any Python code does (`logging.getLogger(__name__)`);
nothing is passed around. The turn pipeline binds the run to its context (`bind`), so every
task and thread the run starts (they copy the context) carries the binding, and one handler on
the root logger (`RunLogHandler`, in settings.LOGGING) turns each line logged under a
binding into an entry: the step it ran in (the engine's `current_step`), level, logger, message
(secrets redacted, capped at MESSAGE_CHARS), time and worker. The organization and the run are
the binding's. Lines below settings.CADENCE_RUN_LOG_LEVEL are not captured.

Delivery keeps order: a runtime that routes log lines among its own events
(`orchestrators.runtime.log_route`, the native adapter does) gets each line between the step
events around it; otherwise the line goes to the recorder at once (on the run's event loop; a
line logged on another thread is handed to the loop). The recorder numbers, bounds, stores and
streams them (engine/runs/recorder.py, engine/runs/live.py).

Alert rules of kind `log_match` search a run's stored lines (`log_texts`, registered as a text
source by engine/alerts/apps.py): judged when the run's outcome commits, like every rule about
one run.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from cadence_site.requestlog import redact
from engine.tracing import current_step
from orchestrators.runtime import LogEvent, log_route

MESSAGE_CHARS = 4000
LEVELS = ("debug", "info", "warning", "error", "critical")
# The run log's own machinery never logs into a run (a line about publishing a line would loop).
_OWN_LOGGERS = ("engine.runs.live", "engine.runs.runlog", "cadence_site.streams")


def log_texts(run: Any) -> Iterable[tuple[str, str]]:
    """A run's stored lines, in order, as (where, message) for `log_match` alert rules
    (engine/alerts/evaluate.py bounds how many it reads and how much of each it searches)."""
    from engine.alerts.evaluate import MAX_TEXTS
    from engine.models import RunLog

    lines = RunLog.objects.filter(run=run).order_by("cursor")
    for cursor, step, level, logger, message in lines.values_list(
        "cursor", "step_seq", "level", "logger", "message"
    )[:MAX_TEXTS]:
        where = f"log {cursor} ({level}, {logger or 'root'}"
        yield (f"{where}, step {step})" if step is not None else f"{where})"), message


def worker_id() -> str:
    """The process a line was logged in: a Celery worker names itself in CADENCE_WORKER_ID."""
    return os.environ.get("CADENCE_WORKER_ID") or f"{socket.gethostname()}:{os.getpid()}"


def level_name(levelno: int) -> str:
    if levelno >= logging.CRITICAL:
        return "critical"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


class RunLogBinding:
    """A run's log destination: `deliver(entry)` runs on the run's event loop."""

    __slots__ = ("deliver", "loop", "thread", "secrets", "worker")

    def __init__(self, deliver: Callable[[dict[str, Any]], None], secrets: Iterable[str] = ()):
        self.deliver = deliver
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        # Values of this run that are secret whatever they look like (its LLM key): replaced
        # wherever they appear, beside the patterns every log line is cleaned of.
        self.secrets = tuple(s for s in secrets if isinstance(s, str) and len(s) >= 6)
        self.worker = worker_id()

    def clean(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        text = redact(text)
        if len(text) > MESSAGE_CHARS:
            text = text[:MESSAGE_CHARS] + f"… [truncated: {len(text)} characters]"
        return text

    def send(self, entry: dict[str, Any]) -> None:
        route = log_route.get()
        if route is not None:
            route(LogEvent(entry))
        elif threading.get_ident() == self.thread and asyncio._get_running_loop() is self.loop:
            # On the loop, running: not a green call (cadence_site/greendb.py), which is on the
            # loop's thread with no loop running, and goes through call_soon_threadsafe below.
            self.deliver(entry)
        else:
            self.loop.call_soon_threadsafe(self.deliver, entry)


current_binding: contextvars.ContextVar[RunLogBinding | None] = contextvars.ContextVar(
    "cadence_run_log", default=None
)


def bind(binding: RunLogBinding | None) -> contextvars.Token:
    return current_binding.set(binding)


def unbind(token: contextvars.Token) -> None:
    current_binding.reset(token)


class RunLogHandler(logging.Handler):
    """On the root logger: a line logged while a run is bound is that run's (a no-op otherwise,
    one context-variable read)."""

    def emit(self, record: logging.LogRecord) -> None:
        binding = current_binding.get()
        if binding is None or record.name.startswith(_OWN_LOGGERS):
            return
        try:
            try:
                text = record.getMessage()
            except Exception:  # a line whose arguments don't fit its format is still a line
                text = str(record.msg)
            if record.exc_info and record.exc_info[1] is not None:
                text = f"{text}\n{logging.Formatter().formatException(record.exc_info)}"
            elif record.exc_text:
                text = f"{text}\n{record.exc_text}"
            binding.send(
                {
                    "step_id": current_step.get(),
                    "level": level_name(record.levelno),
                    "logger": record.name[:200],
                    "message": binding.clean(text),
                    "at": record.created,
                    "worker": binding.worker,
                }
            )
        except RuntimeError:  # the run's loop is closed: the run is over, the line has no home
            return
        except Exception:  # never let a run's log break the code that logged
            self.handleError(record)
