"""Canonical form and hash of a flow: same flow, same hash, whatever its key order or spacing."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any


def _normalise(value: Any) -> Any:
    # JSON does not distinguish 1 from 1.0; without this a re-serialised flow could change hash.
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("flows cannot contain NaN or infinity")
        if value.is_integer():
            return int(value)
        return value
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


def load(flow: Any) -> Any:
    """Accept a parsed flow or its JSON text (str or bytes)."""
    if isinstance(flow, (str, bytes, bytearray)):
        return json.loads(flow)
    return flow


def canonical_json(flow: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 characters kept, integral floats written as integers."""
    return json.dumps(
        _normalise(load(flow)),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def flow_hash(flow: Any) -> str:
    """Hex SHA-256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(flow).encode("utf-8")).hexdigest()
