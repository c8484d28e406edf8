"""Which registered names a flow needs: for resolving a flow against plugins before building it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .hashing import load
from .schema import BUILTIN_MERGES


def _condition_names(spec: Any, out: set[str]) -> None:
    if isinstance(spec, str):
        out.add(spec)
    elif isinstance(spec, Mapping):
        for key in ("all", "any"):
            for sub in spec.get(key) or ():
                _condition_names(sub, out)
        if "not" in spec:
            _condition_names(spec["not"], out)


def referenced_names(flow: Any) -> dict[str, set[str]]:
    """``{"notes", "conditions", "merges", "handlers", "cadences"}`` → the names the flow uses
    (built-in merge strategies excluded). Tolerant of invalid flows: it reads what it can."""
    doc = load(flow)
    found: dict[str, set[str]] = {
        k: set() for k in ("notes", "conditions", "merges", "handlers", "cadences")
    }
    if not isinstance(doc, Mapping):
        return found
    flows = [doc]
    cadences = doc.get("cadences")
    if isinstance(cadences, Mapping):
        flows += [c for c in cadences.values() if isinstance(c, Mapping)]

    def add_ref(ref: Any) -> None:
        if isinstance(ref, str):
            found["notes"].add(ref)
        elif isinstance(ref, Mapping):
            if isinstance(ref.get("note"), str):
                found["notes"].add(ref["note"])
            add_fallback(ref.get("fallback"))

    def add_fallback(spec: Any) -> None:
        if isinstance(spec, Mapping) and isinstance(spec.get("handler"), str):
            found["handlers"].add(spec["handler"])

    for sub in flows:
        on_error = sub.get("on_error")
        if isinstance(on_error, Mapping) and isinstance(on_error.get("handler"), str):
            found["handlers"].add(on_error["handler"])
        for step in sub.get("steps") or ():
            if not isinstance(step, Mapping):
                continue
            if "then" in step:
                add_ref(step.get("note", step["then"]))
                add_fallback(step.get("fallback"))
            for key in ("notes", "if_true", "if_false"):
                for ref in step.get(key) or ():
                    add_ref(ref)
            if "split" in step:
                _condition_names(step.get("condition"), found["conditions"])
            merge = step.get("merge")
            if isinstance(merge, str) and merge not in BUILTIN_MERGES:
                found["merges"].add(merge)
            if "child" in step and isinstance(step.get("cadence"), str):
                found["cadences"].add(step["cadence"])
    return found
