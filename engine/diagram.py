"""Mermaid and Graphviz DOT diagrams of a cadence or of a flow in the JSON form.

``to_mermaid``/``to_dot`` draw a ``Cadence`` in the published library's layout
(``engine.measure_diagram``, with ``render_svg``, ``save_diagram`` and ``print_cadence``) and a
flow dict — or a cadence with ``form="flow"`` — in the engine's layout described here.

Both renderers draw the same graph: a start node, one node per note, a fork/join pair around a
``sync`` (and a parallel split), a decision diamond per ``split`` with true/false edges, and a
cluster (subgraph) per ``child`` holding the child's own steps, nested to any depth. A child
cadence that is already being drawn (a cycle) or unknown is drawn as a single reference node.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

Exit = tuple[str, str | None]  # node id, label of the edge leaving it


class _Cluster:
    __slots__ = ("id", "label", "items")

    def __init__(self, id_: str, label: str) -> None:
        self.id = id_
        self.label = label
        self.items: list[Any] = []  # node ids and nested clusters, in order


class _Graph:
    def __init__(self) -> None:
        self.count = 0
        self.nodes: dict[str, tuple[str, str]] = {}  # id -> (label, shape)
        self.edges: list[tuple[str, str, str | None]] = []
        self.root = _Cluster("root", "")
        self.stack = [self.root]

    def node(self, label: str, shape: str) -> str:
        self.count += 1
        node_id = f"n{self.count}"
        self.nodes[node_id] = (label, shape)
        self.stack[-1].items.append(node_id)
        return node_id

    @contextlib.contextmanager
    def cluster(self, label: str) -> Iterator[None]:
        self.count += 1
        cluster = _Cluster(f"c{self.count}", label)
        self.stack[-1].items.append(cluster)
        self.stack.append(cluster)
        try:
            yield
        finally:
            self.stack.pop()

    def connect(self, exits: list[Exit], target: str) -> None:
        for source, label in exits:
            self.edges.append((source, target, label))


def _ref_label(ref: Any) -> str:
    if isinstance(ref, str):
        return ref
    name = str(ref.get("note", "?"))
    extras = []
    if ref.get("retry") is not None:
        retry = ref["retry"]
        extras.append(f"retry {retry if isinstance(retry, int) else retry.get('max_attempts', 3)}")
    if ref.get("timeout") is not None:
        extras.append(f"timeout {ref['timeout']}s")
    if ref.get("fallback") is not None:
        extras.append("fallback")
    return f"{name} ({', '.join(extras)})" if extras else name


def _condition_label(spec: Any) -> str:
    from .flow.conditions import describe_condition

    try:
        return describe_condition(spec)
    except (KeyError, TypeError):
        return "condition"


class _Drawer:
    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        cadences = doc.get("cadences")
        self.cadences: Mapping[str, Any] = cadences if isinstance(cadences, Mapping) else {}
        self.g = _Graph()

    def chain(self, refs: list[Any], exits: list[Exit]) -> list[Exit]:
        for ref in refs:
            node = self.g.node(_ref_label(ref), "note")
            self.g.connect(exits, node)
            exits = [(node, None)]
        return exits

    def fork(self, name: str, refs: list[Any], exits: list[Exit], merge: str | None) -> list[Exit]:
        fork = self.g.node(f"{name} (sync)", "fork")
        self.g.connect(exits, fork)
        join = self.g.node(f"merge: {merge or 'fail_on_conflict'}", "join")
        for ref in refs:
            node = self.g.node(_ref_label(ref), "note")
            self.g.connect([(fork, None)], node)
            self.g.connect([(node, None)], join)
        return [(join, None)]

    def steps(self, steps: Any, exits: list[Exit], visiting: tuple[str, ...]) -> list[Exit]:
        for step in steps if isinstance(steps, list) else []:
            if isinstance(step, Mapping):
                exits = self.step(step, exits, visiting)
        return exits

    def step(
        self, step: Mapping[str, Any], exits: list[Exit], visiting: tuple[str, ...]
    ) -> list[Exit]:
        g = self.g
        if "then" in step:
            label = str(step["then"])
            note = step.get("note")
            ref = {
                "note": note or label,
                **{k: step[k] for k in ("retry", "timeout", "fallback") if k in step},
            }
            detail = _ref_label(ref)
            node = g.node(label if detail == label else f"{label}: {detail}", "note")
            g.connect(exits, node)
            return [(node, None)]
        if "sequence" in step:
            with g.cluster(f"sequence {step['sequence']}"):
                return self.chain(list(step.get("notes") or []), exits)
        if "sync" in step:
            return self.fork(
                str(step["sync"]), list(step.get("notes") or []), exits, step.get("merge")
            )
        if "split" in step:
            decision = g.node(
                f"{step['split']}: {_condition_label(step.get('condition'))}?", "decision"
            )
            g.connect(exits, decision)
            out: list[Exit] = []
            for key, label in (("if_true", "true"), ("if_false", "false")):
                refs = list(step.get(key) or [])
                if not refs:
                    out.append((decision, label))
                    continue
                first_exits: list[Exit] = [(decision, label)]
                if step.get("parallel"):
                    out += self.fork(
                        f"{step['split']} {label}", refs, first_exits, step.get("merge")
                    )
                else:
                    out += self.chain(refs, first_exits)
            return out
        if "child" in step:
            target = str(step.get("cadence", step["child"]))
            with g.cluster(f"child {step['child']}: {target}"):
                if target in visiting or target not in self.cadences:
                    marker = "cycle" if target in visiting else "not found"
                    node = g.node(f"{target} ({marker})", "ref")
                    g.connect(exits, node)
                    return [(node, None)]
                return self.steps(self.cadences[target].get("steps"), exits, (*visiting, target))
        node = g.node("?", "ref")
        g.connect(exits, node)
        return [(node, None)]

    def draw(self) -> _Graph:
        name = str(self.doc.get("name", "cadence"))
        start = self.g.node(name, "start")
        exits = self.steps(self.doc.get("steps"), [(start, None)], (name,))
        end = self.g.node("end", "end")
        self.g.connect(exits, end)
        return self.g


def _document(target: Any) -> Mapping[str, Any]:
    describe = getattr(target, "describe", None)
    if callable(describe):
        return describe()
    if isinstance(target, Mapping):
        return target
    raise TypeError(f"expected a Cadence or a flow mapping, not {type(target).__name__}")


_MERMAID_SHAPES = {
    "start": ('(["', '"])'),
    "end": ('(["', '"])'),
    "note": ('["', '"]'),
    "fork": ('{{"', '"}}'),
    "join": ('(("', '"))'),
    "decision": ('{"', '"}'),
    "ref": ('[/"', '"/]'),
}


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;").replace("\n", " ")


def to_mermaid(
    target: Any, *, direction: str = "TD", theme: str | None = None, form: str | None = None
) -> str:
    """A Mermaid flowchart. Of a ``Cadence``: the library's layout (``form="flow"`` for the
    engine's, which nests child cadences). Of a flow dict: the engine's layout."""
    if form != "flow" and _is_cadence(target):
        from .measure_diagram import cadence_to_mermaid

        return cadence_to_mermaid(target, direction=direction, theme=theme)
    return flow_mermaid(target, direction=direction, theme=theme)


def to_dot(
    target: Any,
    *,
    rankdir: str = "TB",
    node_color: str = "#4A90D9",
    edge_color: str = "#333333",
    form: str | None = None,
) -> str:
    """A Graphviz digraph, laid out as :func:`to_mermaid` says (colours apply to the
    library's layout)."""
    if form != "flow" and _is_cadence(target):
        from .measure_diagram import cadence_to_dot

        return cadence_to_dot(target, rankdir=rankdir, node_color=node_color, edge_color=edge_color)
    return flow_dot(target, rankdir=rankdir)


def _is_cadence(target: Any) -> bool:
    from .cadence import Cadence

    return isinstance(target, Cadence)


def flow_mermaid(target: Any, *, direction: str = "TD", theme: str | None = None) -> str:
    """The engine's Mermaid layout of a cadence or a flow dict (children drawn nested)."""
    g = _Drawer(_document(target)).draw()
    lines = [f"flowchart {direction}"]
    if theme:
        lines.insert(0, f"%%{{init: {{'theme': '{theme}'}}}}%%")

    def emit(cluster: _Cluster, indent: str) -> None:
        for item in cluster.items:
            if isinstance(item, _Cluster):
                lines.append(f'{indent}subgraph {item.id}["{_mermaid_text(item.label)}"]')
                emit(item, indent + "    ")
                lines.append(f"{indent}end")
            else:
                label, shape = g.nodes[item]
                left, right = _MERMAID_SHAPES[shape]
                lines.append(f"{indent}{item}{left}{_mermaid_text(label)}{right}")

    emit(g.root, "    ")
    for source, target_id, label in g.edges:
        arrow = f" -->|{_mermaid_text(label)}| " if label else " --> "
        lines.append(f"    {source}{arrow}{target_id}")
    return "\n".join(lines) + "\n"


_DOT_SHAPES = {
    "start": "shape=oval, style=filled, fillcolor=lightgrey",
    "end": "shape=oval, style=filled, fillcolor=lightgrey",
    "note": "shape=box, style=rounded",
    "fork": "shape=hexagon",
    "join": "shape=circle",
    "decision": "shape=diamond",
    "ref": "shape=parallelogram",
}


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def flow_dot(target: Any, *, rankdir: str = "TB") -> str:
    """The engine's Graphviz layout of a cadence or a flow dict."""
    doc = _document(target)
    g = _Drawer(doc).draw()
    lines = [f"digraph {_dot_text(str(doc.get('name', 'cadence')))} {{", f"    rankdir={rankdir};"]

    def emit(cluster: _Cluster, indent: str) -> None:
        for item in cluster.items:
            if isinstance(item, _Cluster):
                lines.append(f"{indent}subgraph cluster_{item.id} {{")
                lines.append(f"{indent}    label={_dot_text(item.label)};")
                emit(item, indent + "    ")
                lines.append(f"{indent}}}")
            else:
                label, shape = g.nodes[item]
                lines.append(f"{indent}{item} [label={_dot_text(label)}, {_DOT_SHAPES[shape]}];")

    emit(g.root, "    ")
    for source, target_id, label in g.edges:
        suffix = f" [label={_dot_text(label)}]" if label else ""
        lines.append(f"    {source} -> {target_id}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def __getattr__(name: str) -> Any:
    if name in ("print_cadence", "render_svg", "save_diagram"):
        from . import measure_diagram

        return getattr(measure_diagram, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
