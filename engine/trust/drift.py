"""Drift: a run's definition snapshot against its orchestrator's current definition.

`definition_diff` names what changed, by area: the flow's notes (added, removed, the steps
around them), prompts, tools (added, removed, or their description/schema changed), plugin
versions and package hashes, the model and its parameters, the framework. The drift report lists,
per orchestrator, the runs and the queued work that run a definition other than the current one.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from engine.trust.canonical import sha256_of
from engine.trust.snapshots import orchestrator_definition

_LLM_AREA = {"model": "model", "provider": "model", "base_url": "model", "config_id": "model"}


def flow_notes(flow: Any) -> list[str]:
    """Every note a flow names, in order (then, sequence, sync, split branches, child cadences)."""
    found: list[str] = []

    def steps(items: Any) -> None:
        for step in items or []:
            if isinstance(step, str):
                found.append(step)
                continue
            if not isinstance(step, dict):
                continue
            if "then" in step:
                found.append(step.get("note") or step["then"])
            for key in ("notes", "if_true", "if_false"):
                for item in step.get(key) or []:
                    steps([item] if isinstance(item, str) else [item.get("note") or item])

    if isinstance(flow, dict):
        steps(flow.get("steps"))
        for cadence in (flow.get("cadences") or {}).values():
            steps((cadence or {}).get("steps"))
    return found


def _change(area: str, path: str, before: Any, after: Any) -> dict[str, Any]:
    return {"area": area, "path": path, "before": before, "after": after}


def definition_diff(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    if old.get("framework") != new.get("framework"):
        changes.append(
            _change("framework", "framework", old.get("framework"), new.get("framework"))
        )
    if old.get("flow") != new.get("flow"):
        before, after = Counter(flow_notes(old.get("flow"))), Counter(flow_notes(new.get("flow")))
        changes.append(
            _change(
                "flow",
                "flow",
                sorted((before - after).elements()),  # notes removed
                sorted((after - before).elements()),  # notes added
            )
        )
    for key in ("system_prompt", "max_steps"):
        if old.get(key) != new.get(key):
            area = "prompts" if key == "system_prompt" else "settings"
            changes.append(_change(area, key, old.get(key), new.get(key)))
    old_tools = {t["name"]: t for t in old.get("tools") or []}
    new_tools = {t["name"]: t for t in new.get("tools") or []}
    for name in sorted(old_tools.keys() | new_tools.keys()):
        if old_tools.get(name) != new_tools.get(name):
            changes.append(
                _change(
                    "tools",
                    f"tools.{name}",
                    "present" if name in old_tools else None,
                    "present" if name in new_tools else None,
                )
                if name not in old_tools or name not in new_tools
                else _change("tools", f"tools.{name}", "changed", "changed")
            )
    old_lock = (old.get("plugins") or {}).get("lock") or {}
    new_lock = (new.get("plugins") or {}).get("lock") or {}
    for pid in sorted(old_lock.keys() | new_lock.keys()):
        if old_lock.get(pid) != new_lock.get(pid):
            changes.append(
                _change(
                    "plugins",
                    f"plugins.{pid}",
                    (old_lock.get(pid) or {}).get("version"),
                    (new_lock.get(pid) or {}).get("version"),
                )
            )
    if (old.get("plugins") or {}).get("settings") != (new.get("plugins") or {}).get("settings"):
        changes.append(_change("plugins", "plugins.settings", "changed", "changed"))
    old_llm, new_llm = old.get("llm") or {}, new.get("llm") or {}
    for key in sorted(old_llm.keys() | new_llm.keys()):
        if old_llm.get(key) != new_llm.get(key):
            changes.append(
                _change(
                    _LLM_AREA.get(key, "model"), f"llm.{key}", old_llm.get(key), new_llm.get(key)
                )
            )
    return changes


def run_drift(*, run: Any) -> dict[str, Any]:
    """The drift of one run (in the current schema)."""
    if run.snapshot_id is None:
        return {"drifted": None, "reason": "the run has no snapshot", "changes": []}
    if run.orchestrator is None:
        return {
            "drifted": True,
            "snapshot": run.snapshot_id,
            "current": None,
            "changes": [_change("orchestrator", "orchestrator", run.orchestrator_slug, None)],
        }
    current = orchestrator_definition(run.orchestrator)
    current_hash = sha256_of(current)
    return {
        "drifted": current_hash != run.snapshot_id,
        "snapshot": run.snapshot_id,
        "current": current_hash,
        "changes": definition_diff(run.snapshot.value, current)
        if current_hash != run.snapshot_id
        else [],
    }


def drift_report(*, limit: int = 1000, instances=None) -> list[dict[str, Any]]:
    """Per orchestrator (of `instances`, default all): its current snapshot and the recent runs
    and queued work on older ones."""
    from engine.models import Run
    from orchestrators.models import OrchestratorInstance

    if instances is None:
        instances = OrchestratorInstance.objects.all()
    report = []
    for instance in instances.select_related("llm_config"):
        current = sha256_of(orchestrator_definition(instance))
        recent = Run.objects.filter(orchestrator=instance).exclude(snapshot=None)[:limit]
        outdated = [
            r for r in recent.values("id", "status", "snapshot_id") if r["snapshot_id"] != current
        ]
        report.append(
            {
                "orchestrator": str(instance.id),
                "slug": instance.slug,
                "current_snapshot": current,
                "outdated_runs": len(outdated),
                "outdated_queued": sum(1 for r in outdated if r["status"] in ("queued", "running")),
                "outdated_snapshots": sorted({r["snapshot_id"] for r in outdated}),
            }
        )
    return report
