"""Declarative split conditions.

A condition is either the name of a registered condition callable, or data:
``{"field": "customer.tier", "op": "eq", "value": "gold"}`` (ops: eq ne lt le gt ge in not_in
contains truthy falsy exists), combined with ``{"all": [...]}``, ``{"any": [...]}`` and
``{"not": {...}}``. ``field`` is a dotted path read with getattr, or item access on mappings.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

_MISSING: Any = object()

_BINARY: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "in": lambda a, b: a in b,
    "not_in": lambda a, b: a not in b,
    "contains": lambda a, b: b in a,
}


def read_field(score: Any, path: str) -> Any:
    value = score
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        else:
            value = getattr(value, part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def describe_condition(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    if "field" in spec:
        if "value" in spec:
            return f"{spec['field']} {spec['op']} {spec['value']!r}"
        return f"{spec['field']} {spec['op']}"
    if "all" in spec:
        return "(" + " and ".join(describe_condition(c) for c in spec["all"]) + ")"
    if "any" in spec:
        return "(" + " or ".join(describe_condition(c) for c in spec["any"]) + ")"
    return f"not {describe_condition(spec['not'])}"


def compile_condition(
    spec: Any, named: Mapping[str, Callable[..., Any]] | None = None
) -> Callable[[Any], Any]:
    """Turn a (validated) condition into a callable ``score -> bool`` named after its text."""
    if isinstance(spec, str):
        if named is None or spec not in named:
            raise KeyError(f"unknown condition {spec!r}")
        return named[spec]
    fn = _compile(spec, named)
    fn.__name__ = describe_condition(spec)
    return fn


def _compile(spec: Any, named: Mapping[str, Callable[..., Any]] | None) -> Callable[[Any], Any]:
    if isinstance(spec, str):
        return compile_condition(spec, named)
    if "all" in spec:
        parts = [_compile(c, named) for c in spec["all"]]
        return lambda score: all(p(score) for p in parts)
    if "any" in spec:
        parts = [_compile(c, named) for c in spec["any"]]
        return lambda score: any(p(score) for p in parts)
    if "not" in spec:
        inner = _compile(spec["not"], named)
        return lambda score: not inner(score)
    path, op = spec["field"], spec["op"]
    if op == "exists":
        return lambda score: read_field(score, path) is not _MISSING
    if op == "truthy":
        return lambda score: bool(_or_none(read_field(score, path)))
    if op == "falsy":
        return lambda score: not _or_none(read_field(score, path))
    compare = _BINARY[op]
    expected = spec["value"]

    def check(score: Any) -> bool:
        actual = read_field(score, path)
        if actual is _MISSING:
            return False
        try:
            return bool(compare(actual, expected))
        except TypeError:
            return False  # e.g. comparing None with a number: the condition does not hold

    return check


def _or_none(value: Any) -> Any:
    return None if value is _MISSING else value
