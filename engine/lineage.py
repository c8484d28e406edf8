"""Lineage: for every score field a step read, the step that wrote the value it read.

Works on the step records ``engine.tracing`` makes (each a dict with ``seq``, ``parent``,
``kind``, ``name``, ``status``, ``inputs``: the fields as the step found them, ``outputs``: the
fields it changed, ``reads``: the fields it read, ``forked``: whether it ran on its own copy of
the score). The run is replayed over the record tree, keeping who wrote each field's current
value:

- ``.then`` notes and a sequential ``.split``'s or ``.sequence``'s notes read the latest write
  and write in turn; a ``.split``'s condition reads count as the split's.
- ``.sync`` (and a parallel ``.split``): each branch starts from the writers at the fork (its
  copy-on-write copy) and never sees its siblings' writes. After the merge, a field the group
  changed keeps the branch that wrote exactly the merged value; when none or several did
  (``smart_merge`` uniting two branches' lists), the group's step wrote it, with an edge from
  every branch that wrote the field.
- ``.child``: its measures run on a copy; a field copied back keeps its writer inside the child
  when the value is the one that step wrote, otherwise (a renaming merge) the child's step
  wrote it, with an edge from the latest inner write of the same value.

A value nobody wrote came with the run's input (``from`` None). ``chain`` walks back from one
(step, field) to the input: the writer of the value, then what that writer read (the same field
if it read it, else its latest-written read), and so on.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

SCORE_KINDS = frozenset({"note", "sync", "split", "child", "sequence"})
PREVIEW_CHARS = 200


class LineageError(ValueError):
    """A question about a step or field the run does not have; ``field`` names the parameter."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def preview(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


class Lineage:
    def __init__(self, steps: list[dict[str, Any]], run_input: Any = None) -> None:
        self.steps = sorted(steps, key=lambda s: s["seq"])
        self.by_seq = {s["seq"]: s for s in self.steps}
        self.run_input = run_input
        # (from seq or None, to seq, field), in the order they happened.
        self.edges: list[tuple[int | None, int, str]] = []
        self._read_from: dict[tuple[int, str], int | None] = {}
        self._children: dict[int, list[dict[str, Any]]] = defaultdict(list)
        top: list[dict[str, Any]] = []
        for step in self.steps:
            if not self.is_score_step(step):
                continue
            parent = self._score_ancestor(step)
            (self._children[parent] if parent is not None else top).append(step)
        writers: dict[str, tuple[int | None, Any]] = {}
        for step in top:
            self._visit(step, writers)

    def is_score_step(self, step: dict[str, Any]) -> bool:
        return step["kind"] in SCORE_KINDS and isinstance(step.get("inputs"), dict)

    def _score_ancestor(self, step: dict[str, Any]) -> int | None:
        parent = step.get("parent")
        while parent is not None:
            above = self.by_seq.get(parent)
            if above is None:
                return None
            if self.is_score_step(above):
                return parent
            parent = above.get("parent")
        return None

    def _visit(self, step: dict[str, Any], writers: dict[str, tuple[int | None, Any]]) -> None:
        seq = step["seq"]
        for field in step.get("reads") or ():
            source = writers.get(field)
            self._edge(source[0] if source else None, seq, field)
            self._read_from[(seq, field)] = source[0] if source else None
        outputs = step.get("outputs") or {}
        kids = self._children.get(seq, [])
        if not kids:
            for field, value in outputs.items():
                writers[field] = (seq, value)
            return
        if any(kid.get("forked") for kid in kids):
            self._parallel(step, kids, writers)
        elif step["kind"] == "child":
            self._child(step, kids, writers)
        else:
            for kid in kids:
                self._visit(kid, writers)
            for field, value in outputs.items():
                if field not in writers or writers[field][1] != value:
                    writers[field] = (seq, value)

    def _parallel(self, step, kids, writers) -> None:
        seq = step["seq"]
        branches = []
        for kid in kids:
            own = dict(writers)  # the branch's copy-on-write fork
            self._visit(kid, own)
            branches.append(own)
        for field, value in (step.get("outputs") or {}).items():
            before = writers.get(field)
            changed = [b[field] for b in branches if field in b and b[field] is not before]
            exact = [c for c in changed if c[1] == value]
            if len(exact) == 1:
                writers[field] = exact[0]
                continue
            writers[field] = (seq, value)  # the merge made it
            for source in changed:
                self._edge(source[0], seq, field)

    def _child(self, step, kids, writers) -> None:
        seq = step["seq"]
        inner = dict(writers)  # the child runs on a copy of the parent's score
        for kid in kids:
            self._visit(kid, inner)
        written = [(f, w) for f, w in inner.items() if w is not writers.get(f) and w[0] is not None]
        for field, value in (step.get("outputs") or {}).items():
            source = inner.get(field)
            if source is not None and source is not writers.get(field) and source[1] == value:
                writers[field] = source
                continue
            writers[field] = (seq, value)
            same = [(w[0], f) for f, w in written if w[1] == value]
            if same:
                origin, origin_field = max(same, key=lambda pair: pair[0])
                self._edge(origin, seq, origin_field)

    def _edge(self, origin: int | None, to: int, field: str) -> None:
        edge = (origin, to, field)
        if edge not in self.edges:
            self.edges.append(edge)

    # --- answers ---------------------------------------------------------------------------

    def graph(self) -> dict[str, Any]:
        return {
            "nodes": [
                {"seq": s["seq"], "name": s["name"], "kind": s["kind"], "status": s.get("status")}
                for s in self.steps
            ],
            "edges": [
                {"from": origin, "to": to, "field": field}
                for origin, to, field in sorted(
                    self.edges, key=lambda e: (e[1], e[2], -1 if e[0] is None else e[0])
                )
            ],
        }

    def chain(self, seq: int, field: str) -> list[dict[str, Any]]:
        """Where the value of ``field`` that step ``seq`` read (or wrote) came from, back to the
        run's input."""
        step = self.by_seq.get(seq)
        if step is None:
            raise LineageError(f"The run has no step {seq}.", "step")
        if not self.is_score_step(step):
            raise LineageError(
                f"Step {seq} is a {step['kind']} step: it reads and writes no score fields.",
                "field",
            )
        reads = list(step.get("reads") or ())
        outputs = step.get("outputs") or {}
        if field in reads:
            chain = [self._element(seq, field, (step.get("inputs") or {}).get(field))]
            origin = self._read_from[(seq, field)]
            state = (origin, field) if origin is not None else None
            if state is None:
                chain.append(self._input(field, (step.get("inputs") or {}).get(field)))
                return chain
        elif field in outputs:
            chain = []
            state = (seq, field)
        else:
            raise LineageError(
                f"Step {seq} neither read nor wrote a field {field!r}; it read "
                f"{', '.join(reads) or 'nothing'} and wrote {', '.join(outputs) or 'nothing'}.",
                "field",
            )
        seen: set[tuple[int, str]] = set()
        while state is not None and state not in seen:
            seen.add(state)
            writer, written = state
            chain.append(
                self._element(
                    writer, written, (self.by_seq[writer].get("outputs") or {}).get(written)
                )
            )
            origin, read = self._source(writer, written)
            if read is None:
                chain.append(self._input(None, self.run_input))
                return chain
            if origin is None:
                chain.append(self._input(read, (self.by_seq[writer].get("inputs") or {}).get(read)))
                return chain
            state = (origin, read)
        chain.append(self._input(None, self.run_input))
        return chain

    def _source(self, writer: int, field: str) -> tuple[int | None, str | None]:
        """What the writer made ``field`` from: the same field if it read it (or merged it),
        else the read whose value was written latest; (None, None) when it read nothing."""
        incoming = [(o, f) for o, t, f in self.edges if t == writer]
        if not incoming:
            return None, None
        same = [edge for edge in incoming if edge[1] == field]
        pool = same or incoming
        return max(pool, key=lambda e: (e[0] is not None, e[0] or 0, e[1]))

    def _element(self, seq: int, field: str, value: Any) -> dict[str, Any]:
        step = self.by_seq[seq]
        return {
            "seq": seq,
            "name": step["name"],
            "kind": step["kind"],
            "field": field,
            "value_preview": preview(value),
        }

    @staticmethod
    def _input(field: str | None, value: Any) -> dict[str, Any]:
        return {
            "seq": None,
            "name": "input",
            "kind": "input",
            "field": field,
            "value_preview": preview(value),
        }
