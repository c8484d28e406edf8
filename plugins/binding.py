"""An orchestrator's plugin set: validated, resolved, locked, turned into tools, kept current.

Stored on `OrchestratorInstance.plugins` as `[{"id", "version", "settings", "secrets"}]`, where
`version` is the range asked for, `settings` the non-secret values and `secrets` the Fernet
tokens of the settings the plugin's schema marks `writeOnly`. The API never returns `secrets`;
it reports which are set. `plugin_lock` records what resolution chose (every plugin, transitive
ones included, with its source and hash): the build uses the lock, never a fresh guess, and the
lock is part of the configuration hash, so a new version or changed settings changes the hash
and rebuilds through the lifecycle events like any other change.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import jsonschema
from django.db import transaction

from cadence_site.errors import ApplicationError
from orchestrators import crypto
from plugins import selectors
from plugins.manifest import secret_fields
from plugins.resolution import ResolutionFailed, resolve

MAX_PLUGINS = 50
ENTRY_KEYS = {"id", "version", "settings"}
MAX_SETTINGS_BYTES = 64 * 1024


def _invalid(message: str, code: str, **details: Any) -> ApplicationError:
    return ApplicationError(message, code, {"field": "plugins", **details})


def _settings_issues(schema: dict, values: dict, secrets: list[str], index: int) -> list[dict]:
    validator = jsonschema.Draft202012Validator(schema)
    issues = []
    for error in sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.path))):
        path = list(error.absolute_path)
        secret = bool(path) and path[0] in secrets
        # jsonschema quotes the offending value; for a secret that would echo it back.
        message = f"{error.validator} check failed" if secret else error.message
        issues.append(
            {
                "path": f"/plugins/{index}/settings" + "".join(f"/{p}" for p in path),
                "message": message,
            }
        )
    return issues


def _requirements(entries: list[dict]) -> list[tuple[str, str]]:
    return [(entry["id"], entry.get("version", "")) for entry in entries]


def _resolve(entries: list[dict]) -> dict[str, Any]:
    try:
        return resolve(_requirements(entries), selectors.resolution_catalog())
    except ResolutionFailed as exc:
        raise ApplicationError(
            exc.issues[0].message,
            exc.issues[0].code,
            {"field": "plugins", "issues": [issue.as_dict() for issue in exc.issues]},
        ) from None


def plugin_set_prepare(
    *, entries: Any, existing: list[dict] | None = None
) -> tuple[list[dict], dict]:
    """Validate an API plugin list against the catalog; returns (stored entries, lock).

    A secret omitted from `settings` keeps the value stored for the same plugin; `null` clears it.
    """
    if not isinstance(entries, list):
        raise _invalid("plugins must be a list of {id, version, settings}.", "invalid")
    if len(entries) > MAX_PLUGINS:
        raise _invalid(f"At most {MAX_PLUGINS} plugins per orchestrator.", "too_many_plugins")
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise _invalid(f"plugins[{index}] needs an id.", "invalid", index=index)
        unknown = sorted(set(entry) - ENTRY_KEYS)
        if unknown:
            raise _invalid(
                f"plugins[{index}]: unknown fields {unknown}.", "unknown_field", index=index
            )
        if not isinstance(entry.get("version", ""), str) or not isinstance(
            entry.get("settings", {}), dict
        ):
            raise _invalid(
                f"plugins[{index}]: version is a string, settings an object.",
                "invalid",
                index=index,
            )
        if len(json.dumps(entry.get("settings", {}))) > MAX_SETTINGS_BYTES:
            raise _invalid(f"plugins[{index}]: settings are too large.", "too_large", index=index)
        if entry["id"] in seen:
            raise _invalid(
                f"The plugin {entry['id']} is listed twice.", "duplicate_plugin", index=index
            )
        seen.add(entry["id"])
    chosen = _resolve(entries)
    previous = {e["id"]: e for e in existing or [] if isinstance(e, dict) and "id" in e}
    stored: list[dict] = []
    issues: list[dict] = []
    for index, entry in enumerate(entries):
        row = selectors.catalog_row(chosen[entry["id"]])
        schema = row.manifest.get("settings") or {"type": "object"}
        secrets = secret_fields(row.manifest)
        given = dict(entry.get("settings", {}))
        kept = dict(previous.get(entry["id"], {}).get("secrets", {}))
        plain_values, tokens = {}, {}
        for name, value in given.items():
            if name in secrets:
                if value is None:
                    kept.pop(name, None)
                elif isinstance(value, str):
                    tokens[name] = crypto.encrypt(value)
                else:
                    issues.append(
                        {
                            "path": f"/plugins/{index}/settings/{name}",
                            "message": "A secret is a string.",
                        }
                    )
            else:
                plain_values[name] = value
        tokens = {name: token for name, token in kept.items() if name in secrets} | tokens
        full = plain_values | {name: crypto.decrypt(token) for name, token in tokens.items()}
        issues += _settings_issues(schema, full, secrets, index)
        stored.append(
            {
                "id": entry["id"],
                "version": entry.get("version", ""),
                "settings": plain_values,
                "secrets": tokens,
            }
        )
    for pid, candidate in chosen.items():
        if pid in seen:
            continue
        row = selectors.catalog_row(candidate)
        schema = row.manifest.get("settings") or {"type": "object"}
        if list(jsonschema.Draft202012Validator(schema).iter_errors({})):
            issues.append(
                {
                    "path": "/plugins",
                    "message": f"{pid} (a dependency) needs settings: add it to plugins with them.",
                }
            )
    if issues:
        raise ApplicationError(
            f"Plugin settings are invalid: {issues[0]['path']}: {issues[0]['message']}",
            "invalid_settings",
            {"field": "plugins", "issues": issues},
        )
    return stored, lock_of(chosen)


def lock_of(chosen: dict) -> dict[str, dict[str, str]]:
    return {
        pid: {"version": c.version, "source": c.source, "sha256": c.sha256}
        for pid, c in sorted(chosen.items())
    }


def plugin_set_output(stored: list[dict]) -> list[dict]:
    """The API's view: secrets are write-only (which are set, never their values)."""
    return [
        {
            "id": e["id"],
            "version": e.get("version", ""),
            "settings": e.get("settings", {}),
            "secrets_set": sorted(e.get("secrets", {})),
        }
        for e in stored or []
    ]


def plugin_material(instance) -> dict[str, Any]:
    """What the configuration hash covers: the lock and a digest of the settings (secrets included)."""
    if not instance.plugins:
        return {}
    digest = hashlib.sha256(
        json.dumps(instance.plugins, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    return {"lock": instance.plugin_lock, "settings": digest}


def plugin_set_check(instance) -> None:
    """At build time: every locked version must still exist and be usable."""
    if not instance.plugins:
        return
    for pid, pinned in (instance.plugin_lock or {}).items():
        row = selectors.locked_row(pid, pinned)
        if row is None:
            raise _invalid(
                f"The locked plugin {pid} {pinned['version']} is no longer available; re-resolve.",
                "plugin_unavailable",
            )


def plugin_set_refresh(instance) -> bool:
    """Re-resolve the stored ranges (a new or withdrawn version); True when the lock changed."""
    if not instance.plugins:
        return False
    lock = lock_of(_resolve(instance.plugins))
    if lock == instance.plugin_lock:
        return False
    instance.plugin_lock = lock
    return True


def orchestrators_using_rebuild(*, plugin_id: str) -> list[str]:
    """Re-resolve and rebuild (in the current schema) every orchestrator whose set involves
    `plugin_id`; one that no longer resolves is marked failed with the reason."""
    from orchestrators import services as orchestrator_services
    from orchestrators.models import OrchestratorInstance

    rebuilt = []
    with transaction.atomic():
        candidates = OrchestratorInstance.objects.select_for_update().exclude(
            status=OrchestratorInstance.Status.SUSPENDED
        )
        for instance in candidates.exclude(plugins=[]):
            named = {e.get("id") for e in instance.plugins}
            if plugin_id not in named and plugin_id not in (instance.plugin_lock or {}):
                continue
            try:
                plugin_set_refresh(instance)
            except ApplicationError as exc:
                instance.status = OrchestratorInstance.Status.FAILED
                instance.status_message = exc.message[:2000]
                instance.save(update_fields=["status", "status_message", "updated_at"])
                continue
            instance.save(update_fields=["plugin_lock", "updated_at"])
            orchestrator_services.orchestrator_rebuild(instance=instance)
            rebuilt.append(instance.slug)
    return rebuilt


def plugin_secrets(instance) -> tuple[str, ...]:
    """The decrypted values of the set's secret settings, for the run's log redaction."""
    return tuple(
        sorted(
            {
                crypto.decrypt(token)
                for entry in instance.plugins or []
                for token in entry.get("secrets", {}).values()
            }
        )
    )


# --- tools --------------------------------------------------------------------------------------

_SAFE = re.compile(r"[^a-zA-Z0-9_-]")


def namespaced(plugin_id: str, tool: str, *, full: bool = False) -> str:
    """`weather__forecast`: OpenAI function names allow [a-zA-Z0-9_-] only, so not `weather.forecast`."""
    prefix = _SAFE.sub("_", plugin_id if full else plugin_id.rsplit(".", 1)[-1])
    return f"{prefix}__{tool}"[:64]


def plugin_tools(instance, *, taken: set[str]) -> list:
    """Tools of every locked plugin, named `tool`, or namespaced where a name collides."""
    from plugins.tooling import build_tool

    entries = {e["id"]: e for e in instance.plugins or []}
    specs = []
    for pid, pinned in sorted((instance.plugin_lock or {}).items()):
        row = selectors.locked_row(pid, pinned)
        if row is None:
            raise _invalid(f"The locked plugin {pid} is no longer available.", "plugin_unavailable")
        entry = entries.get(pid, {})
        settings = dict(entry.get("settings", {}))
        settings |= {
            name: crypto.decrypt(token) for name, token in entry.get("secrets", {}).items()
        }
        for tool in row.manifest.get("provides", {}).get("tools", []):
            specs.append((pid, row, tool, settings))
    counts: dict[str, int] = {}
    for _, _, tool, _ in specs:
        counts[tool["name"]] = counts.get(tool["name"], 0) + 1
    tools, names = [], set(taken)
    for pid, row, tool, settings in specs:
        name = tool["name"]
        if counts[name] > 1 or name in taken:
            name = namespaced(pid, name)
            if name in names:
                name = namespaced(pid, tool["name"], full=True)
        names.add(name)
        tools.append(build_tool(name=name, plugin=row, spec=tool, settings=settings))
    return tools


def plugin_notes(instance) -> dict[str, Any]:
    """Code notes of every locked plugin, as engine notes named `plugin.note`."""
    from plugins.notes import code_note, note_name
    from plugins.tooling import code_source, http_tool_call

    entries = {e["id"]: e for e in instance.plugins or []}
    notes: dict[str, Any] = {}
    for pid, pinned in sorted((instance.plugin_lock or {}).items()):
        row = selectors.locked_row(pid, pinned)
        specs = row.manifest.get("provides", {}).get("notes", []) if row else []
        if not specs:
            continue
        secrets = set(secret_fields(row.manifest))
        settings = dict(entries.get(pid, {}).get("settings", {}))
        full = settings | {
            name: crypto.decrypt(token)
            for name, token in entries.get(pid, {}).get("secrets", {}).items()
        }
        egress = row.manifest.get("capabilities", {}).get("egress", [])
        tools = {
            t["name"]: http_tool_call(t, egress, full, secrets)
            for t in row.manifest.get("provides", {}).get("tools", [])
            if t["type"] == "http"
        }
        visible = {k: v for k, v in settings.items() if k not in secrets}
        for spec in specs:
            name = note_name(pid, spec["name"])
            notes[name] = code_note(
                name=name,
                spec=spec,
                source=code_source(row, spec["source"]),
                settings=visible,
                tools=tools,
            )
    return notes
