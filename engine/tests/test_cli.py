from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "myplugin.py").write_text(
        textwrap.dedent(
            """
            from engine import Cadence
            from engine.flow import NoteRegistry

            async def a(score):
                pass

            checkout = Cadence("checkout").then("a", a).sync("g", [a, a])
            empty = Cadence("empty")
            registry = NoteRegistry({"a": a})
            FLOW = {"name": "f", "steps": [{"then": "a"}]}
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_diagram_of_a_cadence_in_both_formats(plugin, capsys):
    assert main(["diagram", "myplugin:checkout", "--format", "mermaid"]) == 0
    assert capsys.readouterr().out.startswith("flowchart TD\n")
    assert main(["diagram", "myplugin:checkout", "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith("digraph cadence {")  # the library's layout


def test_diagram_to_a_file(plugin, tmp_path, capsys):
    out = tmp_path / "checkout.mmd"
    assert main(["diagram", "myplugin:checkout", "-o", str(out)]) == 0
    assert out.read_text().startswith("flowchart TD\n    START([checkout])")


def test_validate_a_json_file_reports_every_problem(plugin, capsys):
    bad = plugin / "bad.json"
    bad.write_text(
        json.dumps({"name": "x", "steps": [{"then": "nope"}, {"sync": "g", "notes": []}]})
    )
    assert main(["validate", str(bad), "--registry", "myplugin:registry"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"INVALID {bad}: 2 problem(s)",
        "  /steps/0/then: unknown note 'nope' [unknown_note]",
        "  /steps/1/notes: [] should be non-empty [empty_group]",
    ]


def test_validate_a_module_attr_and_a_whole_module(plugin, capsys):
    assert main(["validate", "myplugin:FLOW", "--registry", "myplugin:registry"]) == 0
    assert capsys.readouterr().out.startswith("OK myplugin:FLOW sha256=")
    assert main(["validate", "myplugin"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("OK myplugin:checkout sha256=")
    assert out[1:] == [
        "INVALID myplugin:empty: 1 problem(s)",
        "  /steps: [] should be non-empty [empty_group]",
    ]


def test_new_note_with_resilience_options(capsys):
    assert main(["new", "note", "process-payment", "--retry", "3", "--timeout", "30"]) == 0
    source = capsys.readouterr().out
    assert "@note(retry=3, timeout=30)\nasync def process_payment(score) -> None:" in source
    namespace: dict = {}
    exec(compile(source, "generated", "exec"), namespace)  # the scaffold is valid Python
    assert namespace["process_payment"].__cadence_note__.retry == 3


def test_new_cadence_init_hash_and_schema(tmp_path, capsys):
    assert main(["new", "cadence", "checkout"]) == 0
    namespace: dict = {}
    exec(compile(capsys.readouterr().out, "generated", "exec"), namespace)
    assert namespace["checkout_cadence"].name == "checkout"
    assert main(["init", str(tmp_path / "starter")]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "starter").iterdir()) == [
        "__init__.py",
        "cadences.py",
        "flow.json",
    ]
    assert main(["hash", str(tmp_path / "starter" / "flow.json")]) == 0
    assert len(capsys.readouterr().out.strip()) == 64
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Cadence flow"


def test_errors_exit_with_status_2(capsys):
    assert main(["diagram", "no_such_module_xyz:thing"]) == 2
    assert capsys.readouterr().err.startswith("error: cannot import 'no_such_module_xyz'")
    assert main(["new", "note", "123"]) == 2


def test_python_dash_m_engine_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "new", "note", "x", "--sync"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "@note\ndef x(score) -> None:" in proc.stdout


def test_diagram_and_hash_of_a_flow_file(tmp_path, capsys):
    flow = tmp_path / "flow.json"
    flow.write_text(
        json.dumps({"name": "f", "steps": [{"then": "a"}, {"sync": "g", "notes": ["b", "c"]}]})
    )
    assert main(["diagram", str(flow), "--format", "dot"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('digraph "f" {') and 'label="g (sync)"' in out
    assert main(["hash", str(flow)]) == 0
    from engine.flow import flow_hash

    assert capsys.readouterr().out.strip() == flow_hash(flow.read_text())
