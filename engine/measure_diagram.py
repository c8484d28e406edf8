"""Diagrams of a ``Cadence`` in the published library's layout (``to_mermaid``/``to_dot`` of a
cadence object, ``print_cadence``, ``render_svg``, ``save_diagram``).

One node per measure, ids ``measure_<i>``: a fork/join pair around a ``.sync`` group, a
sequence's notes in a row, a decision with Yes/No branches meeting at a merge point for a
``.split``, a subroutine node for a ``.child``. Labels are written as the library writes them;
characters that would break the diagram syntax (brackets, quotes …) are escaped, which the
library does not do (its output is then invalid Mermaid/DOT).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .measures import ChildMeasure, SequenceMeasure, SplitMeasure, SyncMeasure, ThenMeasure

if TYPE_CHECKING:
    from .cadence import Cadence


class _Node:
    __slots__ = ("id", "label", "kind", "children", "yes", "no")

    def __init__(self, id_: str, label: str, kind: str) -> None:
        self.id = id_
        self.label = label
        self.kind = kind  # single | parallel | sequence | branch | child | task
        self.children: list[_Node] = []
        self.yes: list[_Node] = []
        self.no: list[_Node] = []


def _fn_label(step: Any, fallback: str) -> str:
    return getattr(step.fn, "__name__", None) or fallback


def _plain(text: str) -> str:
    return text


def _nodes(cadence: Cadence[Any], esc: Any = _plain) -> list[_Node]:
    """The measures as diagram nodes; ``esc`` escapes the user's names (not the layout's)."""
    out = []
    for i, m in enumerate(cadence.measures):
        mid = f"measure_{i}"
        if isinstance(m, ThenMeasure):
            out.append(_Node(mid, esc(m.name), "single"))
        elif isinstance(m, (SyncMeasure, SequenceMeasure)):
            kind = "parallel" if isinstance(m, SyncMeasure) else "sequence"
            node = _Node(mid, esc(m.name), kind)
            node.children = [
                _Node(f"{mid}_task_{j}", esc(_fn_label(s, f"task_{j}")), "task")
                for j, s in enumerate(m.steps)
            ]
            out.append(node)
        elif isinstance(m, SplitMeasure):
            condition = getattr(m.condition, "__name__", "condition")
            node = _Node(mid, f"{esc(m.name)}\\n({esc(condition)})", "branch")
            node.yes = [
                _Node(f"{mid}_true_{j}", esc(_fn_label(s, f"if_true_{j}")), "task")
                for j, s in enumerate(m.if_true)
            ]
            node.no = [
                _Node(f"{mid}_false_{j}", esc(_fn_label(s, f"if_false_{j}")), "task")
                for j, s in enumerate(m.if_false)
            ]
            out.append(node)
        elif isinstance(m, ChildMeasure):
            out.append(_Node(mid, f"{esc(m.name)}\\n[{esc(m.cadence.name)}]", "child"))
    return out


_MERMAID_ESCAPES = {c: f"#{ord(c)};" for c in '[](){}|"<>'}


def _m(label: str) -> str:
    return "".join(_MERMAID_ESCAPES.get(c, c) for c in label)


def _d(label: str) -> str:
    return label.replace('"', '\\"')


def cadence_to_mermaid(
    cadence: Cadence[Any], *, direction: str = "TD", theme: str | None = None
) -> str:
    lines = [f"flowchart {direction}"]
    if theme:
        lines.insert(0, f"%%{{init: {{'theme': '{theme}'}}}}%%")
    lines.append(f"    START([{_m(cadence.name)}])")
    prev = "START"
    for node in _nodes(cadence, _m):
        if node.kind == "single":
            lines += [f"    {node.id}[{node.label}]", f"    {prev} --> {node.id}"]
            prev = node.id
        elif node.kind == "parallel":
            fork, join = f"{node.id}_fork", f"{node.id}_join"
            lines += [f"    {fork}{{{{parallel: {node.label}}}}}", f"    {prev} --> {fork}"]
            for child in node.children:
                lines += [
                    f"    {child.id}[{child.label}]",
                    f"    {fork} --> {child.id}",
                    f"    {child.id} --> {join}",
                ]
            lines.append(f"    {join}((join))")
            prev = join
        elif node.kind == "sequence":
            for child in node.children:
                lines += [f"    {child.id}[{child.label}]", f"    {prev} --> {child.id}"]
                prev = child.id
        elif node.kind == "branch":
            lines += [f"    {node.id}{{{node.label}}}", f"    {prev} --> {node.id}"]
            merge = f"{node.id}_merge"
            for answer, branch in (("Yes", node.yes), ("No", node.no)):
                if not branch:
                    lines.append(f"    {node.id} -->|{answer}| {merge}")
                    continue
                last = node.id
                for j, child in enumerate(branch):
                    lines.append(f"    {child.id}[{child.label}]")
                    arrow = f" -->|{answer}| " if j == 0 else " --> "
                    lines.append(f"    {last}{arrow}{child.id}")
                    last = child.id
                lines.append(f"    {last} --> {merge}")
            lines.append(f"    {merge}((merge))")
            prev = merge
        elif node.kind == "child":
            lines += [f"    {node.id}[[{node.label}]]", f"    {prev} --> {node.id}"]
            prev = node.id
    lines += ["    END([End])", f"    {prev} --> END"]
    return "\n".join(lines)


def cadence_to_dot(
    cadence: Cadence[Any],
    *,
    rankdir: str = "TB",
    node_color: str = "#4A90D9",
    edge_color: str = "#333333",
) -> str:
    lines = [
        "digraph cadence {",
        f"    rankdir={rankdir};",
        '    node [shape=box, style=filled, fontname="Arial"];',
        f'    edge [color="{edge_color}"];',
        "",
        f'    START [label="{_d(cadence.name)}", shape=oval, fillcolor="#90EE90"];',
    ]
    prev = "START"
    for node in _nodes(cadence, _d):
        if node.kind == "single":
            lines.append(f'    {node.id} [label="{node.label}", fillcolor="{node_color}"];')
            lines.append(f"    {prev} -> {node.id};")
            prev = node.id
        elif node.kind == "parallel":
            fork, join = f"{node.id}_fork", f"{node.id}_join"
            lines.append(
                f'    {fork} [label="{node.label}", shape=parallelogram, fillcolor="#FFD700"];'
            )
            lines += [
                f"    {prev} -> {fork};",
                f"    subgraph cluster_{node.id} {{",
                '        label="parallel";',
                "        style=dashed;",
            ]
            for child in node.children:
                lines += [
                    f'        {child.id} [label="{child.label}", fillcolor="{node_color}"];',
                    f"        {fork} -> {child.id};",
                    f"        {child.id} -> {join};",
                ]
            lines += ["    }", f'    {join} [label="join", shape=circle, fillcolor="#D3D3D3"];']
            prev = join
        elif node.kind == "sequence":
            for child in node.children:
                lines.append(f'    {child.id} [label="{child.label}", fillcolor="{node_color}"];')
                lines.append(f"    {prev} -> {child.id};")
                prev = child.id
        elif node.kind == "branch":
            label = node.label.replace("\\n", "\\l")
            lines.append(f'    {node.id} [label="{label}", shape=diamond, fillcolor="#FFA500"];')
            lines.append(f"    {prev} -> {node.id};")
            merge = f"{node.id}_merge"
            for answer, branch, colour in (
                ("Yes", node.yes, "#90EE90"),
                ("No", node.no, "#FFB6C1"),
            ):
                if not branch:
                    lines.append(f'    {node.id} -> {merge} [label="{answer}"];')
                    continue
                last = node.id
                for j, child in enumerate(branch):
                    lines.append(f'    {child.id} [label="{child.label}", fillcolor="{colour}"];')
                    suffix = f' [label="{answer}"]' if j == 0 else ""
                    lines.append(f"    {last} -> {child.id}{suffix};")
                    last = child.id
                lines.append(f"    {last} -> {merge};")
            lines.append(f'    {merge} [label="merge", shape=circle, fillcolor="#D3D3D3"];')
            prev = merge
        elif node.kind == "child":
            label = node.label.replace("\\n", "\\l")
            lines.append(f'    {node.id} [label="{label}", shape=box3d, fillcolor="#DDA0DD"];')
            lines.append(f"    {prev} -> {node.id};")
            prev = node.id
    lines += ['    END [label="End", shape=oval, fillcolor="#FF6347"];', f"    {prev} -> END;", "}"]
    return "\n".join(lines)


def print_cadence(cadence: Cadence[Any]) -> None:
    """Print the cadence as a tree (measures, group members, branches) to stdout."""
    nodes = _nodes(cadence)
    out = [f"\n=== Cadence: {cadence.name} ===\n"]
    marks = {"parallel": "⫘ PARALLEL", "sequence": "▶ SEQUENCE"}
    for i, node in enumerate(nodes):
        prefix = "├──" if i < len(nodes) - 1 else "└──"
        if node.kind == "single":
            out.append(f"{prefix} [{node.label}]")
        elif node.kind in marks:
            out.append(f"{prefix} {marks[node.kind]}: {node.label}")
            for j, child in enumerate(node.children):
                branch = "│   ├──" if j < len(node.children) - 1 else "│   └──"
                out.append(f"{branch} {child.label}")
        elif node.kind == "branch":
            out.append(f"{prefix} ◇ BRANCH: {node.label}")
            if node.yes:
                out.append("│   ├── YES:")
                out += [f"│   │   └── {child.label}" for child in node.yes]
            if node.no:
                out.append("│   └── NO:")
                out += [f"│       └── {child.label}" for child in node.no]
        elif node.kind == "child":
            out.append(f"{prefix} ⊞ CHILD FLOW: {node.label}")
    out.append("")
    print("\n".join(out))  # noqa: T201 - printing is what it is for


def _run_tool(command: list[str], text: str, missing: str) -> str:
    try:
        return subprocess.run(
            command, input=text, capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except FileNotFoundError as exc:
        raise RuntimeError(missing) from exc


def render_svg(cadence: Any, *, format: str = "dot", **kwargs: Any) -> str:  # noqa: A002
    """SVG of the diagram: Graphviz ``dot`` (default) or mermaid-cli ``mmdc`` for
    ``format="mermaid"``; RuntimeError naming the tool when it is not installed."""
    from .diagram import to_dot, to_mermaid

    if format == "mermaid":
        return _run_tool(
            ["mmdc", "-i", "-", "-o", "-", "-e", "svg"],
            to_mermaid(cadence, **kwargs),
            "mermaid-cli (mmdc) not found. Install with: npm install -g @mermaid-js/mermaid-cli",
        )
    return _run_tool(
        ["dot", "-Tsvg"],
        to_dot(cadence, **kwargs),
        "Graphviz (dot) not found. "
        "Install with: brew install graphviz (macOS) or apt install graphviz (Linux)",
    )


def save_diagram(
    cadence: Any, path: str | Path, *, format: str | None = None, **kwargs: Any
) -> None:  # noqa: A002
    """Write the diagram to ``path``, the format from its suffix (or ``format``): ``.mmd`` /
    ``.mermaid`` Mermaid, ``.dot`` / ``.gv`` DOT, ``.svg`` / ``.png`` / ``.pdf`` rendered by
    Graphviz."""
    from .diagram import to_dot, to_mermaid

    target = Path(path)
    ext = format or target.suffix.lower()
    if ext in (".mmd", ".mermaid"):
        target.write_text(to_mermaid(cadence, **kwargs))
    elif ext in (".dot", ".gv"):
        target.write_text(to_dot(cadence, **kwargs))
    elif ext == ".svg":
        target.write_text(render_svg(cadence, **kwargs))
    elif ext in (".png", ".pdf"):
        try:
            subprocess.run(
                ["dot", f"-T{ext[1:]}", "-o", str(target)],
                input=to_dot(cadence, **kwargs),
                text=True,
                check=True,
                timeout=60,
            )
        except FileNotFoundError as exc:
            raise RuntimeError("Graphviz (dot) not found.") from exc
    else:
        raise ValueError(f"Unknown format: {ext}")


__all__ = ["cadence_to_dot", "cadence_to_mermaid", "print_cadence", "render_svg", "save_diagram"]
