"""Build a :class:`~engine.Cadence` from a validated flow and a registry of named callables."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..cadence import Cadence
from ..exclusive import exclusive_note
from ..measures import Step
from ..note import apply_resilience
from .conditions import compile_condition
from .registry import NoteRegistry, as_registry
from .schema import BUILTIN_MERGES
from .validate import check_flow


def _fields_merge(mapping: Mapping[str, str]) -> Callable[[Any, Any], None]:
    """``{"fields": {"parent_field": "child_field"}}``: copy child fields onto the parent."""
    pairs = tuple(mapping.items())

    def merge_fields(parent: Any, child: Any) -> None:
        for parent_field, child_field in pairs:
            object.__setattr__(parent, parent_field, getattr(child, child_field))

    return merge_fields


class _Builder:
    def __init__(self, doc: Mapping[str, Any], registry: NoteRegistry) -> None:
        self.doc = doc
        self.registry = registry
        self.built: dict[str, Cadence[Any]] = {}

    def fallback(self, spec: Mapping[str, Any] | None) -> Any:
        if spec is None:
            return None
        if "handler" in spec:
            return {"handler": self.registry.handlers[spec["handler"]]}
        return {"default": spec.get("default"), "field": spec.get("field")}

    def step(self, ref: Any, *, options: Mapping[str, Any] | None = None) -> Step:
        spec: Mapping[str, Any] = {"note": ref} if isinstance(ref, str) else ref
        if options:
            spec = {**options, **spec}
        name = spec["note"]
        fn = self.registry.notes[name]
        if any(spec.get(k) is not None for k in ("retry", "timeout", "fallback")):
            fn = apply_resilience(
                fn,
                retry=spec.get("retry"),
                timeout=spec.get("timeout"),
                fallback=self.fallback(spec.get("fallback")),
            )
        return Step(fn, name=name)

    def merge(self, name: str | None) -> Any:
        if name is None or name in BUILTIN_MERGES:
            return name or "fail_on_conflict"
        return self.registry.merges[name]

    def cadence(self, name: str, flow: Mapping[str, Any], score: Any) -> Cadence[Any]:
        cadence: Cadence[Any] = Cadence(name, score)
        for step in flow["steps"]:
            if "then" in step:
                options = {k: step[k] for k in ("retry", "timeout", "fallback") if k in step}
                note_step = self.step(step.get("note", step["then"]), options=options)
                if step.get("exclusive"):
                    note_step = Step(
                        exclusive_note(note_step.fn, step["exclusive"], step["then"]),
                        name=note_step.name,
                    )
                cadence.then(
                    step["then"], note_step, can_interrupt=step.get("can_interrupt", False)
                )
            elif "sequence" in step:
                cadence.sequence(step["sequence"], [self.step(r) for r in step["notes"]])
            elif "sync" in step:
                cadence.sync(
                    step["sync"],
                    [self.step(r) for r in step["notes"]],
                    merge_strategy=self.merge(step.get("merge")),
                )
            elif "split" in step:
                condition = compile_condition(step["condition"], self.registry.conditions)
                cadence.split(
                    step["split"],
                    condition,
                    [self.step(r) for r in step["if_true"]],
                    [self.step(r) for r in step.get("if_false", [])] or None,
                    parallel=step.get("parallel", False),
                    merge_strategy=self.merge(step.get("merge")),
                )
            else:
                merge = step.get("merge")
                if isinstance(merge, Mapping):
                    merge_fn = _fields_merge(merge["fields"])
                elif isinstance(merge, str):
                    merge_fn = self.registry.merges[merge]
                else:
                    merge_fn = None
                cadence.child(step["child"], self.child(step["cadence"]), merge_fn)
        on_error = flow.get("on_error")
        if on_error is not None:
            cadence.on_error(
                self.registry.handlers[on_error["handler"]], stop=on_error.get("stop", True)
            )
        return cadence

    def child(self, name: str) -> Cadence[Any]:
        # Child cadences carry no score: they run on a copy of the parent's (see ChildMeasure).
        if name not in self.built:
            self.built[name] = self.cadence(name, self.doc["cadences"][name], None)
        return self.built[name]


def build_cadence(
    flow: Any,
    registry: NoteRegistry | Mapping[str, Callable[..., Any]],
    score: Any = None,
) -> Cadence[Any]:
    """Validate ``flow`` against ``registry`` (raising ``FlowValidationError`` with every issue)
    and build the cadence. ``score`` becomes the cadence's default score."""
    reg = as_registry(registry)
    assert reg is not None
    doc = check_flow(flow, reg)
    return _Builder(doc, reg).cadence(doc["name"], doc, score)
