"""Definition snapshots: what decides an orchestrator's behaviour, canonical, content-addressed.

A run points at the snapshot it started under; recovery, retries and replay run that snapshot,
never the orchestrator's current definition. The definition holds the flow, framework, prompts,
tools (with the schema the model sees), plugins and the LLM configuration's id, model and
parameters. It never holds a key: the LLM configuration is named by id, its secret stays in its row.
"""

from __future__ import annotations

from typing import Any

from engine.trust.canonical import canonical_json, jsonable, sha256_of
from engine.trust.models import DefinitionSnapshot

DEFINITION_FORMAT = "cadence.definition/v1"


def _tools(names: list[str]) -> list[dict[str, Any]]:
    from orchestrators.tools import builtin_tools

    described = []
    for name in names:
        try:
            tool = builtin_tools.get(name)
        except KeyError:
            described.append({"name": name, "missing": True})
            continue
        described.append(
            {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
        )
    return described


def _plugins(instance: Any) -> dict[str, Any]:
    """What resolution chose (id, version, source, package hash) and the non-secret settings;
    secret settings are named, never their values (plugins.binding keeps them encrypted)."""
    from plugins.binding import plugin_set_output

    return {
        "lock": getattr(instance, "plugin_lock", None) or {},
        "settings": plugin_set_output(getattr(instance, "plugins", None) or []),
    }


def orchestrator_definition(instance: Any) -> dict[str, Any]:
    """The behaviour-deciding part of an orchestrator instance (and its LLM configuration)."""
    llm = instance.llm_config
    return jsonable(
        {
            "format": DEFINITION_FORMAT,
            "framework": instance.framework,
            "flow": instance.flow or {},
            "system_prompt": instance.system_prompt,
            "tools": _tools(list(instance.tools or [])),
            "max_steps": instance.max_steps,
            "plugins": _plugins(instance),
            "llm": None
            if llm is None
            else {
                "config_id": str(llm.id),
                "provider": llm.provider,
                "base_url": llm.base_url,
                "model": llm.model,
                "temperature": llm.temperature,
                "max_tokens": llm.max_tokens,
                "timeout_seconds": llm.timeout_seconds,
                "max_retries": llm.max_retries,
            },
        }
    )


def snapshot_store(*, definition: dict[str, Any]) -> DefinitionSnapshot:
    """The snapshot of `definition`, written the first time its hash is seen."""
    value = jsonable(definition)
    digest = sha256_of(value)
    found = DefinitionSnapshot.objects.filter(hash=digest).first()
    if found is not None:
        return found
    # ON CONFLICT DO NOTHING: two runs starting under a new definition at once both succeed.
    DefinitionSnapshot.objects.bulk_create(
        [
            DefinitionSnapshot(
                hash=digest, canonical=canonical_json(value).decode(), definition=value
            )
        ],
        ignore_conflicts=True,
    )
    return DefinitionSnapshot.objects.get(hash=digest)


def snapshot_for_orchestrator(*, instance: Any) -> DefinitionSnapshot:
    return snapshot_store(definition=orchestrator_definition(instance))


def snapshot_get(*, hash: str) -> DefinitionSnapshot | None:
    return DefinitionSnapshot.objects.filter(hash=hash).first()
