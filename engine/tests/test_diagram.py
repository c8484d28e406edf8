from __future__ import annotations

import re

import pytest

from engine import Cadence, to_dot, to_mermaid
from engine.flow import flow_to_dot, flow_to_mermaid


async def a(score) -> None:
    pass


def b(score) -> None:
    pass


def everything() -> Cadence:
    inner = Cadence("inner").then("deep", a)
    payment = Cadence("payment").then("charge", a).child("nested", inner)
    return (
        Cadence("checkout")
        .then("prepare", a)
        .sequence("steps", [a, b])
        .sync("enrich", [a, b])
        .split("route", lambda s: True, [a], [b])
        .split("maybe", lambda s: True, [a, b], parallel=True)
        .child("pay", payment)
        .then("done", b)
    )


NODE = re.compile(r'^\s+(n\d+)(\(\["|\["|\{\{"|\(\("|\{"|\[/").*("\]\)|"\]|"\}\}|"\)\)|"\}|"/\])$')
EDGE = re.compile(r"^\s+(n\d+) -->(\|[^|]+\|)? (n\d+)$")


def check_mermaid(text: str) -> tuple[set[str], list[tuple[str, str]]]:
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    nodes: set[str] = set()
    edges = []
    depth = 0
    for line in lines[1:]:
        if line.strip().startswith("subgraph "):
            depth += 1
        elif line.strip() == "end":
            depth -= 1
        elif m := NODE.match(line):
            assert m.group(1) not in nodes
            nodes.add(m.group(1))
        elif m := EDGE.match(line):
            edges.append((m.group(1), m.group(3)))
        else:
            pytest.fail(f"unexpected mermaid line: {line!r}")
        assert depth >= 0
    assert depth == 0
    assert all(s in nodes and t in nodes for s, t in edges)
    return nodes, edges


def check_dot(text: str) -> tuple[set[str], list[tuple[str, str]]]:
    assert text.startswith('digraph "')
    assert text.count("{") == text.count("}")
    nodes = set(re.findall(r"^\s+(n\d+) \[label=", text, re.M))
    edges = re.findall(r"^\s+(n\d+) -> (n\d+)", text, re.M)
    assert all(s in nodes and t in nodes for s, t in edges)
    return nodes, edges


def reachable(edges: list[tuple[str, str]], start: str) -> set[str]:
    seen = {start}
    frontier = [start]
    while frontier:
        node = frontier.pop()
        for s, t in edges:
            if s == node and t not in seen:
                seen.add(t)
                frontier.append(t)
    return seen


def test_flow_form_mermaid_covers_every_construct_and_nested_children():
    text = to_mermaid(everything(), form="flow")
    nodes, edges = check_mermaid(text)
    # every node is reachable from the start node (n1)
    assert reachable(edges, "n1") == nodes
    assert (
        "subgraph c" in text
        and '["child pay: payment"]' in text
        and '["child nested: inner"]' in text
    )
    assert '{"route: #lt;lambda#gt;?"}' in text
    assert "-->|true|" in text and "-->|false|" in text
    assert '{{"enrich (sync)"}}' in text
    assert text.count('["deep: a"]') == 1


def test_flow_form_dot_covers_every_construct_and_nested_children():
    text = to_dot(everything(), form="flow")
    nodes, edges = check_dot(text)
    assert reachable(edges, "n1") == nodes
    assert text.count("subgraph cluster_") == 3  # sequence, child pay, nested child
    assert 'label="child nested: inner";' in text
    assert "shape=diamond" in text and 'label="false"' in text


def test_flow_dicts_render_with_cycles_quotes_and_resilience():
    flow = {
        "name": 'say "hi"',
        "steps": [
            {"then": "call", "note": "api", "retry": 3, "timeout": 5},
            {
                "split": "s",
                "condition": {"field": "tier", "op": "eq", "value": "gold"},
                "if_true": [{"note": "x", "fallback": {"default": 1}}],
            },
            {"child": "loop", "cadence": "a"},
        ],
        "cadences": {"a": {"steps": [{"child": "back", "cadence": "a"}]}},
    }
    mermaid = flow_to_mermaid(flow)
    check_mermaid(mermaid)
    assert '(["say #quot;hi#quot;"])' in mermaid
    assert '["call: api (retry 3, timeout 5s)"]' in mermaid
    assert "tier eq 'gold'?" in mermaid
    assert '[/"a (cycle)"/]' in mermaid
    dot = flow_to_dot(flow)
    check_dot(dot)
    assert 'digraph "say \\"hi\\""' in dot


def test_diagrams_reject_other_objects():
    with pytest.raises(TypeError):
        to_mermaid(42)
