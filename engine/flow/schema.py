"""The published JSON Schema of the flow form (``flow.schema.json``, also ``FLOW_SCHEMA``)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SCHEMA_FILE = "flow.schema.json"
STEP_KINDS = ("then", "sequence", "sync", "split", "child")
BUILTIN_MERGES = ("fail_on_conflict", "last_write_wins", "smart_merge")
COMPARISON_OPS = (
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "in",
    "not_in",
    "contains",
    "truthy",
    "falsy",
    "exists",
)
UNARY_OPS = ("truthy", "falsy", "exists")


def schema_text() -> str:
    return resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


# The packaged file is the single source of truth; the constant is that file, parsed once.
FLOW_SCHEMA: dict[str, Any] = json.loads(schema_text())
