"""The server's ASGI application without execution proofs (engine/trust/turns.py), recording on:
benchmarks/runs.py's third server, which tells how much of a served turn the proof costs.

Only for that benchmark (never served otherwise)."""

from __future__ import annotations

from cadence_site.asgi import application
from engine.runs.pipeline import unregister
from engine.trust.turns import proven_runs

unregister(proven_runs)

__all__ = ["application"]
