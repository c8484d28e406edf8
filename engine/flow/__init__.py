"""The JSON flow form of a cadence: schema, validation, canonical hashing, building, diagrams.

```python
from engine.flow import FLOW_SCHEMA, NoteRegistry, validate_flow, check_flow, flow_hash, build_cadence
issues = validate_flow(flow, registry)      # [] when valid; else FlowIssue(path, message, code)
cadence = build_cadence(flow, registry, score)
```
"""

from __future__ import annotations

from typing import Any

from .build import build_cadence
from .conditions import compile_condition, describe_condition
from .hashing import canonical_json, flow_hash, load
from .references import referenced_names
from .registry import NoteRegistry, as_registry
from .schema import (
    BUILTIN_MERGES,
    COMPARISON_OPS,
    FLOW_SCHEMA,
    SCHEMA_FILE,
    STEP_KINDS,
    schema_text,
)
from .validate import FlowIssue, FlowValidationError, check_flow, validate_flow


def flow_to_mermaid(flow: Any) -> str:
    from ..diagram import to_mermaid

    return to_mermaid(load(flow))


def flow_to_dot(flow: Any) -> str:
    from ..diagram import to_dot

    return to_dot(load(flow))


__all__ = [
    "BUILTIN_MERGES",
    "COMPARISON_OPS",
    "FLOW_SCHEMA",
    "SCHEMA_FILE",
    "STEP_KINDS",
    "FlowIssue",
    "FlowValidationError",
    "NoteRegistry",
    "as_registry",
    "build_cadence",
    "canonical_json",
    "check_flow",
    "compile_condition",
    "describe_condition",
    "flow_hash",
    "flow_to_dot",
    "flow_to_mermaid",
    "load",
    "referenced_names",
    "schema_text",
    "validate_flow",
]
