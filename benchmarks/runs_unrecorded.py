"""The server's ASGI application with step recording off: benchmarks/runs.py's "off" server.

Only for that benchmark (never served otherwise): the native adapter's flows run untraced (no
step ids, score snapshots, reads or resource usage) and the run recorder drops every runtime
event (no step rows, step frames or log lines). The run's row, its outcome, the conversation's
messages and the organization's run feed are written as in any served turn."""

from __future__ import annotations

from cadence_site.asgi import application
from engine.runs.recorder import RunRecorder
from orchestrators.adapters import cadence as native

native.traced = lambda cadence: cadence
RunRecorder.observe = lambda self, event: None  # type: ignore[method-assign]

__all__ = ["application"]
