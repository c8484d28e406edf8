"""Validation of the flow form: the JSON Schema first, then semantic checks.

Every problem is reported, each with a JSON Pointer to where it is (``/steps/2/notes/1``):
schema errors (wrong type, unknown key, empty group, missing key) and semantic ones (unknown
note, condition, merge, handler or child cadence; a comparison without a value; a cycle of child
cadences).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jsonschema

from ..errors import CadenceError
from .hashing import load
from .registry import NoteRegistry, as_registry
from .schema import BUILTIN_MERGES, FLOW_SCHEMA, STEP_KINDS, UNARY_OPS

_VALIDATOR = jsonschema.Draft202012Validator(FLOW_SCHEMA)
_REQUIRED = re.compile(r"^'(.+)' is a required property$")

_CODES = {
    "type": "wrong_type",
    "additionalProperties": "unknown_key",
    "required": "missing_key",
    "minItems": "empty_group",
    "enum": "invalid_value",
    "const": "invalid_value",
    "minimum": "out_of_range",
    "maximum": "out_of_range",
    "exclusiveMinimum": "out_of_range",
    "minLength": "empty_name",
    "maxLength": "too_long",
}


class FlowIssue:
    __slots__ = ("path", "message", "code")

    def __init__(self, path: str, message: str, code: str) -> None:
        self.path = path
        self.message = message
        self.code = code

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message, "code": self.code}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FlowIssue) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.path, self.message, self.code))

    def __repr__(self) -> str:
        return f"FlowIssue({self.path!r}, {self.message!r}, code={self.code!r})"

    def __str__(self) -> str:
        return f"{self.path or '/'}: {self.message}"


class FlowValidationError(CadenceError):
    code = "invalid_flow"

    def __init__(self, issues: list[FlowIssue]) -> None:
        self.issues = issues
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(
            f"invalid flow ({len(issues)} problem(s)):\n{lines}",
            details={"issues": [i.to_dict() for i in issues]},
        )


_EXCLUSIVE_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_EXCLUSIVE_NAME = re.compile(r"(input(\.[A-Za-z_][A-Za-z0-9_]*)+|conversation_id|run_id)")


def exclusive_problem(template: str) -> str | None:
    """Why an `exclusive` key template cannot work, or None: placeholders are
    {input.<path>}, {conversation_id} or {run_id}, and braces come in pairs."""
    for match in _EXCLUSIVE_PLACEHOLDER.finditer(template):
        if not _EXCLUSIVE_NAME.fullmatch(match.group(1)):
            return (
                f"unknown placeholder {match.group()!r} in the exclusive key: use "
                "{input.<field>}, {conversation_id} or {run_id}"
            )
    if "{" in _EXCLUSIVE_PLACEHOLDER.sub("", template) or "}" in _EXCLUSIVE_PLACEHOLDER.sub(
        "", template
    ):
        return "unbalanced braces in the exclusive key"
    return None


def pointer(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _schema_issues(doc: Any) -> list[FlowIssue]:
    issues: list[FlowIssue] = []
    for error in _VALIDATOR.iter_errors(doc):
        path = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set(error.schema.get("properties", {}))
            for key in sorted(k for k in error.instance if k not in allowed):
                issues.append(
                    FlowIssue(pointer([*path, key]), f"unknown key {key!r}", "unknown_key")
                )
            continue
        if error.validator == "required":
            # Point at the missing key itself, as for unknown keys: editors can highlight it.
            match = _REQUIRED.match(error.message)
            if match:
                key = match.group(1)
                issues.append(
                    FlowIssue(pointer([*path, key]), f"missing required key {key!r}", "missing_key")
                )
                continue
        if error.validator == "anyOf" and _is_step_path(path):
            issues.append(
                FlowIssue(
                    pointer(path), f"a step needs one of: {', '.join(STEP_KINDS)}", "unknown_step"
                )
            )
            continue
        if error.validator == "anyOf":
            issues.append(
                FlowIssue(
                    pointer(path),
                    "a condition object needs one of: field, all, any, not",
                    "invalid_condition",
                )
            )
            continue
        issues.append(
            FlowIssue(pointer(path), error.message, _CODES.get(str(error.validator), "schema"))
        )
    return issues


def _is_step_path(path: list[Any]) -> bool:
    return len(path) >= 2 and path[-2] == "steps" and isinstance(path[-1], int)


def _flows(doc: Mapping[str, Any]) -> Iterator[tuple[str | None, list[Any], Mapping[str, Any]]]:
    """(cadence name or None for the root, pointer parts, flow object)."""
    yield None, [], doc
    cadences = doc.get("cadences")
    if isinstance(cadences, Mapping):
        for name, sub in cadences.items():
            if isinstance(sub, Mapping):
                yield name, ["cadences", name], sub


def _note_refs(step: Mapping[str, Any], base: list[Any]) -> Iterator[tuple[list[Any], Any]]:
    """(pointer parts of the ref, ref) for every note reference in a step."""
    for key in ("notes", "if_true", "if_false"):
        refs = step.get(key)
        if isinstance(refs, list):
            for i, ref in enumerate(refs):
                yield [*base, key, i], ref


class _Checker:
    def __init__(self, doc: Mapping[str, Any], registry: NoteRegistry | None) -> None:
        self.doc = doc
        self.registry = registry
        self.issues: list[FlowIssue] = []
        cadences = doc.get("cadences")
        self.cadence_names = set(cadences) if isinstance(cadences, Mapping) else set()

    def add(self, parts: list[Any], message: str, code: str) -> None:
        self.issues.append(FlowIssue(pointer(parts), message, code))

    def known(self, kind: str, name: Any) -> bool:
        return (
            self.registry is None
            or not isinstance(name, str)
            or name in getattr(self.registry, kind)
        )

    def check_ref(self, parts: list[Any], ref: Any) -> None:
        if isinstance(ref, str):
            if not self.known("notes", ref):
                self.add(parts, f"unknown note {ref!r}", "unknown_note")
        elif isinstance(ref, Mapping):
            if not self.known("notes", ref.get("note")):
                self.add([*parts, "note"], f"unknown note {ref.get('note')!r}", "unknown_note")
            self.check_fallback([*parts, "fallback"], ref.get("fallback"))

    def check_fallback(self, parts: list[Any], spec: Any) -> None:
        if not isinstance(spec, Mapping):
            return
        if "handler" in spec and ("default" in spec or "field" in spec):
            self.add(
                parts,
                "a fallback has either a handler or a default/field, not both",
                "conflicting_fallback",
            )
        if "handler" in spec and not self.known("handlers", spec["handler"]):
            self.add([*parts, "handler"], f"unknown handler {spec['handler']!r}", "unknown_handler")

    def check_condition(self, parts: list[Any], spec: Any) -> None:
        if isinstance(spec, str):
            if not self.known("conditions", spec):
                self.add(parts, f"unknown condition {spec!r}", "unknown_condition")
        elif isinstance(spec, Mapping):
            if "field" in spec and spec.get("op") not in UNARY_OPS and "value" not in spec:
                self.add(parts, f"operator {spec.get('op')!r} needs a 'value'", "missing_value")
            for key in ("all", "any"):
                if isinstance(spec.get(key), list):
                    for i, sub in enumerate(spec[key]):
                        self.check_condition([*parts, key, i], sub)
            if "not" in spec:
                self.check_condition([*parts, "not"], spec["not"])

    def check_merge(self, parts: list[Any], merge: Any) -> None:
        if (
            isinstance(merge, str)
            and merge not in BUILTIN_MERGES
            and not self.known("merges", merge)
        ):
            self.add(parts, f"unknown merge {merge!r}", "unknown_merge")

    def check_step(self, parts: list[Any], step: Any) -> None:
        if not isinstance(step, Mapping):
            return
        kinds = [k for k in STEP_KINDS if k in step]
        if len(kinds) > 1:
            self.add(
                parts,
                f"a step has exactly one kind, this one has {', '.join(kinds)}",
                "several_kinds",
            )
            return
        if "then" in step:
            self.check_ref(
                [*parts, "note"] if "note" in step else [*parts, "then"],
                step.get("note", step["then"]),
            )
            self.check_fallback([*parts, "fallback"], step.get("fallback"))
            if isinstance(step.get("exclusive"), str):
                problem = exclusive_problem(step["exclusive"])
                if problem:
                    self.add([*parts, "exclusive"], problem, "invalid_exclusive")
        for ref_parts, ref in _note_refs(step, parts):
            self.check_ref(ref_parts, ref)
        if "split" in step:
            self.check_condition([*parts, "condition"], step.get("condition"))
        if "merge" in step and ("sync" in step or "split" in step):
            self.check_merge([*parts, "merge"], step["merge"])
        if "child" in step:
            target = step.get("cadence")
            if isinstance(target, str) and target not in self.cadence_names:
                self.add(
                    [*parts, "cadence"],
                    f"unknown cadence {target!r} (not in 'cadences')",
                    "unknown_cadence",
                )
            self.check_merge([*parts, "merge"], step.get("merge"))

    def check(self) -> None:
        for _name, base, flow in _flows(self.doc):
            steps = flow.get("steps")
            if isinstance(steps, list):
                for i, step in enumerate(steps):
                    self.check_step([*base, "steps", i], step)
            on_error = flow.get("on_error")
            if isinstance(on_error, Mapping) and not self.known(
                "handlers", on_error.get("handler")
            ):
                self.add(
                    [*base, "on_error", "handler"],
                    f"unknown handler {on_error.get('handler')!r}",
                    "unknown_handler",
                )
        self.check_cycles()

    def check_cycles(self) -> None:
        edges: dict[str | None, list[tuple[str, list[Any]]]] = {}
        for name, base, flow in _flows(self.doc):
            out = edges.setdefault(name, [])
            steps = flow.get("steps")
            for i, step in enumerate(steps if isinstance(steps, list) else []):
                if (
                    isinstance(step, Mapping)
                    and "child" in step
                    and isinstance(step.get("cadence"), str)
                ):
                    out.append((step["cadence"], [*base, "steps", i, "cadence"]))
        state: dict[str | None, int] = {}  # 1 = on the current path, 2 = done
        stack: list[str | None] = []
        reported: set[frozenset[str]] = set()

        def visit(node: str | None) -> None:
            state[node] = 1
            stack.append(node)
            for target, parts in edges.get(node, ()):
                if target not in self.cadence_names:
                    continue
                if state.get(target) == 1:
                    loop = [*stack[stack.index(target) :], target]
                    key = frozenset(n for n in loop if n is not None)
                    if key not in reported:
                        reported.add(key)
                        chain = " -> ".join(str(n) for n in loop)
                        self.add(parts, f"cycle of child cadences: {chain}", "cycle")
                elif state.get(target) is None:
                    visit(target)
            stack.pop()
            state[node] = 2

        visit(None)
        for name in sorted(self.cadence_names):
            if state.get(name) is None:
                visit(name)


def validate_flow(
    flow: Any, registry: NoteRegistry | Mapping[str, Callable[..., Any]] | None = None
) -> list[FlowIssue]:
    """Every problem with ``flow`` (dict or JSON text); an empty list means valid.

    Without a registry, note/condition/merge/handler names are not checked.
    """
    try:
        doc = load(flow)
    except ValueError as exc:
        return [FlowIssue("", f"not valid JSON: {exc}", "invalid_json")]
    issues = _schema_issues(doc)
    if isinstance(doc, Mapping):
        checker = _Checker(doc, as_registry(registry))
        checker.check()
        several = {i.path for i in checker.issues if i.code == "several_kinds"}
        # A step with two kinds makes the schema complain about each kind's keys; one issue is enough.
        issues = [
            i for i in issues if not (i.path in several or i.path.rsplit("/", 1)[0] in several)
        ]
        issues.extend(checker.issues)
    return sorted(issues, key=lambda i: (i.path, i.code, i.message))


def check_flow(
    flow: Any, registry: NoteRegistry | Mapping[str, Callable[..., Any]] | None = None
) -> dict[str, Any]:
    """Validate and return the parsed flow, or raise :class:`FlowValidationError` with every issue."""
    issues = validate_flow(flow, registry)
    if issues:
        raise FlowValidationError(issues)
    return load(flow)
