"""Same results as the published library: the scenarios of ``library_scenarios.py`` run under the
library (``cadence-orchestration`` 0.7.2, package ``cadence``) and under the engine, each in a
subprocess, and their outputs compared, minus the deliberate differences of engine/README.md.

The library is a development requirement (requirements-dev.txt): it has no dependencies and its
one top-level package, ``cadence``, is no name of the project's or its dependencies'. Project
code must not import it (ruff's banned-api rule). It is looked up in this interpreter, then in
``$CADENCE_LIBRARY_PYTHON`` or the scratch venv ``/tmp/cadence-lib-venv``; the test is skipped
when none has it, except under CI (``CI`` set), where a missing library fails the run.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LIBRARY_VERSION = "0.7.2"
SCRATCH_PYTHON = "/tmp/cadence-lib-venv/bin/python"


def _run(python: str, package: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)} if package == "engine" else dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.run(
        [python, str(HERE / "library_scenarios.py"), package],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _has_library(python: str) -> bool:
    if not Path(python).exists():
        return False
    probe = subprocess.run(
        [python, "-c", "import cadence; print(cadence.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    return probe.returncode == 0 and probe.stdout.strip() == LIBRARY_VERSION


def _library_python() -> str | None:
    """An interpreter that imports the library: this one (requirements-dev.txt), else
    ``$CADENCE_LIBRARY_PYTHON`` or the scratch venv."""
    try:
        if importlib.metadata.version("cadence-orchestration") == LIBRARY_VERSION:
            return sys.executable
    except importlib.metadata.PackageNotFoundError:
        pass
    for python in (os.environ.get("CADENCE_LIBRARY_PYTHON", ""), SCRATCH_PYTHON):
        if python and _has_library(python):
            return python
    return None


LIBRARY_PYTHON = _library_python()

# Durations printed by reporters and logging hooks ("completed in 0.001s") vary run by run.
_DURATION = re.compile(r"\d+\.\d+m?s\b")


def _timeless(value: object) -> object:
    if isinstance(value, str):
        return _DURATION.sub(lambda m: re.sub(r"\d", "0", m.group()), value)
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items()}
    return value


# Deliberate differences (engine/README.md, compatibility table), removed before comparing.
def _without_known_differences(results: dict, package: str) -> dict:
    results = _timeless(json.loads(json.dumps(results)))
    results["console_reporter"]["stdout"] = "timings vary"
    results.pop("event_fields")  # the engine's CadenceEvent adds score, attempt, run_id
    for name in ("retry_exhausted", "timeout"):
        results[name]["value"].pop("note")  # the engine's errors also name their note
    if package == "cadence":  # smart_merge repeats the original items in the library (a bug)
        assert results["sync_smart"]["value"]["items"] == ["x", "a", "x", "b"]
    else:
        assert results["sync_smart"]["value"]["items"] == ["x", "a", "b"]
    results.pop("sync_smart")
    return results


def test_the_library_is_there_under_ci():
    # CI installs requirements-dev.txt: a parity test skipped there would hide a missing install.
    if not os.environ.get("CI"):
        pytest.skip("outside CI a missing library only skips the parity test")
    assert LIBRARY_PYTHON is not None, (
        f"cadence-orchestration=={LIBRARY_VERSION} is not installed (requirements-dev.txt)"
    )


@pytest.mark.skipif(LIBRARY_PYTHON is None, reason="the published library is not installed")
def test_library_style_code_gives_the_library_results():
    library = _without_known_differences(_run(LIBRARY_PYTHON, "cadence"), "cadence")
    ours = _without_known_differences(_run(sys.executable, "engine"), "engine")
    assert sorted(ours) == sorted(library)
    assert {k: v for k, v in ours.items() if v != library[k]} == {}


def test_durations_are_compared_by_their_format_only():
    assert _timeless(["done in 0.001s", {"a": "12.5ms"}, 3]) == [
        "done in 0.000s",
        {"a": "00.0ms"},
        3,
    ]
    assert _timeless("0.001s") != _timeless("0.0010s")  # a different format still differs
