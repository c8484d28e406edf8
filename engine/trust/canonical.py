"""RFC 8785 canonical JSON (the `rfc8785` package) and the SHA-256 digests built on it.

Everything a proof commits to is hashed through here, and the standalone verifier hashes the
same way (it owns the definitions; this module only prepares values for them).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

from engine.trust.verify_bundle import canonical, digest

# RFC 8785 numbers are IEEE doubles: integers beyond 2**53 would silently lose precision.
_SAFE_INT = 2**53 - 1
_AS_IS = frozenset({str, bool, type(None)})


def jsonable(value: Any) -> Any:
    """A JSON value for anything a step record may hold: integers beyond 2**53, non-finite
    floats, dates, UUIDs and unknown objects become strings, so canonicalization never fails."""
    kind = type(value)
    # Plain dicts and lists, with their strings, null and booleans taken inline: most of what a
    # step record holds (every step's, at every proof). Anything else as below.
    if kind is dict:
        return {
            key if type(key) is str else str(key): (
                item if type(item) in _AS_IS else jsonable(item)
            )
            for key, item in value.items()
        }
    if kind is list:
        return [item if type(item) in _AS_IS else jsonable(item) for item in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -_SAFE_INT <= value <= _SAFE_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    return str(value)


def canonical_json(value: Any) -> bytes:
    return canonical(jsonable(value))


def sha256_of(value: Any) -> str:
    return digest(jsonable(value))


__all__ = ["canonical_json", "jsonable", "sha256_of"]
