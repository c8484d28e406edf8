"""RFC 8785 canonical JSON (the `rfc8785` package) and the SHA-256 digests built on it.

Everything a proof commits to is hashed through here, and the standalone verifier hashes the
same way (it owns the definitions; this module only prepares values for them and writes the
same bytes faster).

The signer's bytes come from orjson (C, several times faster than the standard library's encoder,
which every step's record, inputs and outputs went through at every turn's end), on the values
the verifier's own fast path takes (verify_bundle._plain: safe integers, floats written without
an exponent, keys of the Basic Multilingual Plane); orjson writes those exactly as RFC 8785 does
(tests/test_canonical_fast.py holds it to the `rfc8785` package and to the verifier, value by
value), and refuses integers beyond 2**53 and lone surrogates. Anything else goes through the
verifier's own `canonical`. The verifier itself needs only the standard library and `rfc8785`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson

from engine.trust.verify_bundle import GENESIS, _NotPlain, _plain, step_summary
from engine.trust.verify_bundle import canonical as reference_canonical

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


# Sorted keys; an integer beyond 2**53 raises (RFC 8785 numbers are doubles: the reference
# refuses it too, or jsonable made it a string).
_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
_dumps = orjson.dumps
_REFUSED = (_NotPlain, orjson.JSONEncodeError, RecursionError)


def canonical(value: Any) -> bytes:
    """verify_bundle.canonical(value): the same bytes, or the same refusal."""
    try:
        return _dumps(_plain(value), option=_ORJSON)
    except _REFUSED:
        return reference_canonical(value)


def digest(value: Any) -> str:
    """verify_bundle.digest(value), through `canonical` above."""
    return hashlib.sha256(canonical(value)).hexdigest()


_SCALAR = frozenset({str, int, float, bool, type(None)})
_NAMED = ("seq", "kind", "name", "outcome")


def chain(records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """verify_bundle.chain([jsonable(record) for record in records]): the same step list and
    chain head. `records` may be step records (proofs.step_record) or their fields as the rows
    hold them (proofs.step_fields): a record the fast path takes as it is (verify_bundle._plain:
    nothing jsonable would change but a tuple, written as the list it would become) is walked
    once, and its inputs, outputs and whole record written from that; any other is made jsonable
    and summarized by the verifier's own step_summary."""
    previous = GENESIS
    steps = []
    sha256 = hashlib.sha256
    for record in records:
        try:
            if type(record) is not dict or any(type(record.get(k)) not in _SCALAR for k in _NAMED):
                raise _NotPlain
            ready = _plain(record)
            inputs = _dumps(ready.get("inputs"), option=_ORJSON)
            outputs = _dumps(ready.get("outputs"), option=_ORJSON)
            # {"prev": ..., "record": ...}, as record_hash hashes it.
            hashed = _dumps({"prev": previous, "record": ready}, option=_ORJSON)
        except _REFUSED:
            summary = step_summary(jsonable(record), previous)
        else:
            summary = {
                "seq": record.get("seq"),
                "kind": record.get("kind"),
                "name": record.get("name"),
                "outcome": record.get("outcome"),
                "inputs_hash": sha256(inputs).hexdigest(),
                "outputs_hash": sha256(outputs).hexdigest(),
                "record_hash": sha256(hashed).hexdigest(),
            }
        steps.append(summary)
        previous = summary["record_hash"]
    return steps, previous


def canonical_json(value: Any) -> bytes:
    return canonical(jsonable(value))


def sha256_of(value: Any) -> str:
    return digest(jsonable(value))


__all__ = ["canonical", "canonical_json", "chain", "digest", "jsonable", "sha256_of"]
