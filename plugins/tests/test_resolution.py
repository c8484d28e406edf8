from __future__ import annotations

import pytest

from plugins.resolution import Candidate, ResolutionFailed, resolve

CATALOG = {
    "a.x": [
        Candidate("a.x", "1.0.0", (("a.y", ">=2"),)),
        Candidate("a.x", "1.1.0", (("a.y", ">=3"),)),
    ],
    "a.y": [Candidate("a.y", "2.0.0"), Candidate("a.y", "3.0.0"), Candidate("a.y", "3.1.0-rc.1")],
}


def versions(chosen) -> dict[str, str]:
    return {pid: c.version for pid, c in chosen.items()}


def test_highest_versions_with_transitive_dependencies():
    assert versions(resolve([("a.x", "")], CATALOG)) == {"a.x": "1.1.0", "a.y": "3.1.0-rc.1"}


def test_backtracks_when_the_first_pick_conflicts():
    assert versions(resolve([("a.x", "*"), ("a.y", "<3")], CATALOG)) == {
        "a.x": "1.0.0",
        "a.y": "2.0.0",
    }


def test_a_conflict_names_both_chains():
    with pytest.raises(ResolutionFailed) as caught:
        resolve([("a.x", "==1.1.0"), ("a.y", "==2.0.0")], CATALOG)
    [issue] = caught.value.issues
    assert issue.code == "version_conflict"
    assert sorted(issue.chains) == [
        ["orchestrator", "a.x 1.1.0", "a.y >=3"],
        ["orchestrator", "a.y ==2.0.0"],
    ]


def test_cycles_are_refused_with_the_loop():
    catalog = {
        "a.x": [Candidate("a.x", "1.0.0", (("a.y", "*"),))],
        "a.y": [Candidate("a.y", "1.0.0", (("a.z", "*"),))],
        "a.z": [Candidate("a.z", "1.0.0", (("a.x", "*"),))],
    }
    with pytest.raises(ResolutionFailed) as caught:
        resolve([("a.x", "")], catalog)
    assert [i.chains for i in caught.value.issues] == [
        [["a.x 1.0.0", "a.y 1.0.0", "a.z 1.0.0", "a.x 1.0.0"]]
    ]


def test_missing_and_garbage():
    with pytest.raises(ResolutionFailed) as caught:
        resolve(
            [("a.x", ""), ("a.q", ">=1")], {"a.x": [Candidate("a.x", "1.0.0", (("a.r", "*"),))]}
        )
    assert {i.code for i in caught.value.issues} == {"missing_dependency"}
    with pytest.raises(ResolutionFailed) as caught:
        resolve([("a.x", "~~1")], CATALOG)
    assert caught.value.issues[0].code == "bad_range"
