"""`cadence-plugin.json`: the published schema, every check beyond it, versions and capabilities.

Plain Python (no Django): the CLI (`python -m engine plugin validate`) and the upload pipeline use
the same function. `manifest_issues` returns every problem at once, each with a JSON pointer to
where it is, so an author fixes a manifest in one round instead of one error per upload.

Versions are semantic versions limited to MAJOR.MINOR.PATCH with an optional `-alpha.N`,
`-beta.N` or `-rc.N`: that subset maps one-to-one onto PEP 440, so `packaging` orders them and
its specifiers (`>=1.2,<2`) express the ranges dependencies and orchestrators ask for.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

MANIFEST_NAME = "cadence-plugin.json"
SCHEMA_VERSION = 1
SCHEMA_FILE = "schema/cadence-plugin-1.schema.json"
KINDS = ("system", "tenant")

MANIFEST_SCHEMA: dict[str, Any] = json.loads(
    resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
)
_VALIDATOR = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)
_PRERELEASE = {"alpha": "a", "beta": "b", "rc": "rc"}
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-(alpha|beta|rc)\.(\d+))?$")
_SETTING_REF = re.compile(r"\{settings\.([a-z][a-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Issue:
    path: str
    message: str
    code: str = "invalid"

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message, "code": self.code}


def pointer(parts: Any) -> str:
    return (
        "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts) if parts else ""
    )


@lru_cache(maxsize=4096)
def parse_version(text: str) -> Version:
    """A manifest version as a `packaging` Version; ValueError for anything outside the subset."""
    match = _SEMVER.match(text or "") if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a version of the form MAJOR.MINOR.PATCH[-alpha|beta|rc.N]"
        )
    major, minor, patch, pre, number = match.groups()
    return Version(f"{major}.{minor}.{patch}{_PRERELEASE[pre] + number if pre else ''}")


@lru_cache(maxsize=4096)
def parse_range(text: str) -> SpecifierSet:
    """A version range in PEP 440 specifier syntax; "" and "*" mean any version."""
    if not isinstance(text, str):
        raise ValueError("a version range must be a string")
    cleaned = text.strip()
    if cleaned in ("", "*"):
        return SpecifierSet("")
    try:
        return SpecifierSet(cleaned)
    except InvalidSpecifier:
        raise ValueError(
            f"{text!r} is not a version range (use PEP 440 specifiers such as '>=1.2,<2')"
        ) from None


def _placeholders(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def host_listed(host: str, allowed: list[str]) -> bool:
    host = host.lower()
    return any(
        host == entry or (entry.startswith(".") and (host.endswith(entry) or host == entry[1:]))
        for entry in allowed
    )


def _schema_issues(schema: Any, path: list[Any]) -> list[Issue]:
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [Issue(pointer(path + list(exc.absolute_path)), exc.message, "invalid_schema")]
    return []


def _flow_issues(flow: Any, path: list[Any]) -> list[Issue]:
    from engine.flow import validate_flow

    # Notes come from the agent, this plugin and its dependencies: only known once the plugin set
    # is resolved (plugins.resolution), so an unknown note is not an upload error.
    return [
        Issue(pointer(path) + issue.path, issue.message, issue.code)
        for issue in validate_flow(flow, {})
        if issue.code
        not in ("unknown_note", "unknown_condition", "unknown_merge", "unknown_handler")
    ]


def _http_tool_issues(tool: dict, path: list[Any], manifest: dict) -> list[Issue]:
    from urllib.parse import urlsplit

    issues: list[Issue] = []
    egress = manifest.get("capabilities", {}).get("egress", [])
    parts = urlsplit(tool["url"])
    host = (parts.hostname or "").lower()
    if not host_listed(host, egress):
        issues.append(
            Issue(
                pointer([*path, "url"]),
                f"The host {host!r} is not listed in capabilities.egress.",
                "egress_not_declared",
            )
        )
    arguments = set(tool.get("parameters", {}).get("properties", {}))
    try:
        fields = _placeholders(parts.path + ("?" + parts.query if parts.query else ""))
    except ValueError as exc:
        return [
            *issues,
            Issue(pointer([*path, "url"]), f"Bad URL template: {exc}.", "bad_template"),
        ]
    for field in fields:
        if field not in arguments:
            issues.append(
                Issue(
                    pointer([*path, "url"]),
                    f"The placeholder {{{field}}} names no argument in parameters.properties.",
                    "unknown_placeholder",
                )
            )
    settings_schema = manifest.get("settings", {}).get("properties", {})
    secrets = set(manifest.get("capabilities", {}).get("secrets", []))
    for header, value in tool.get("headers", {}).items():
        for name in _SETTING_REF.findall(value):
            if name not in settings_schema:
                issues.append(
                    Issue(
                        pointer([*path, "headers", header]),
                        f"{{settings.{name}}} names no property of the settings schema.",
                        "unknown_setting",
                    )
                )
            elif settings_schema[name].get("writeOnly") and name not in secrets:
                issues.append(
                    Issue(
                        pointer([*path, "headers", header]),
                        f"The secret {name!r} is not listed in capabilities.secrets.",
                        "secret_not_declared",
                    )
                )
        leftover = _SETTING_REF.sub("", value)
        if "{" in leftover or "}" in leftover:
            issues.append(
                Issue(
                    pointer([*path, "headers", header]),
                    "Header values may only use {settings.NAME} placeholders.",
                    "bad_template",
                )
            )
    return issues


def manifest_issues(manifest: Any, files: set[str] | None = None) -> list[Issue]:
    """Every problem with a manifest (schema first, then meaning); [] when it is valid.

    ``files`` (the package's member names) lets code sources be checked for existence.
    """
    issues = [
        Issue(pointer(error.absolute_path), error.message, f"schema_{error.validator}")
        for error in sorted(_VALIDATOR.iter_errors(manifest), key=lambda e: list(map(str, e.path)))
    ]
    if issues or not isinstance(manifest, dict):
        return issues
    try:
        parse_version(manifest["version"])
    except ValueError as exc:
        issues.append(Issue("/version", str(exc), "bad_version"))
    provides = manifest.get("provides", {})
    tenant = manifest["kind"] == "tenant"
    for section in ("tools", "notes", "flows", "prompts", "mcp_servers"):
        seen: set[str] = set()
        for index, item in enumerate(provides.get(section, [])):
            if item["name"] in seen:
                issues.append(
                    Issue(
                        pointer(["provides", section, index, "name"]),
                        f"The name {item['name']!r} is used twice in {section}.",
                        "duplicate_name",
                    )
                )
            seen.add(item["name"])
    for index, tool in enumerate(provides.get("tools", [])):
        path = ["provides", "tools", index]
        if "parameters" in tool:
            issues += _schema_issues(tool["parameters"], [*path, "parameters"])
        if tool["type"] == "http":
            issues += _http_tool_issues(tool, path, manifest)
        elif tool["type"] == "python" and tenant:
            issues.append(
                Issue(
                    pointer([*path, "type"]),
                    "Tenant plugins are declarative: Python tools are for system plugins only.",
                    "python_not_allowed",
                )
            )
    for section, key in (("tools", "source"), ("notes", "source")):
        for index, item in enumerate(provides.get(section, [])):
            if key in item and files is not None and item[key] not in files:
                issues.append(
                    Issue(
                        pointer(["provides", section, index, key]),
                        f"The package has no file {item[key]!r}.",
                        "missing_file",
                    )
                )
    for index, tool in enumerate(provides.get("tools", [])):
        if tool["type"] == "python" and files is not None:
            module = tool["entrypoint"].split(":")[0].replace(".", "/")
            if f"python/{module}.py" not in files:
                issues.append(
                    Issue(
                        pointer(["provides", "tools", index, "entrypoint"]),
                        f"The package has no file 'python/{module}.py'.",
                        "missing_file",
                    )
                )
    for index, flow in enumerate(provides.get("flows", [])):
        issues += _flow_issues(flow["flow"], ["provides", "flows", index, "flow"])
    declared_mcp = set(manifest.get("capabilities", {}).get("mcp_servers", []))
    for index, server in enumerate(provides.get("mcp_servers", [])):
        if server["name"] not in declared_mcp:
            issues.append(
                Issue(
                    pointer(["provides", "mcp_servers", index, "name"]),
                    f"The MCP server {server['name']!r} is not listed in capabilities.mcp_servers.",
                    "mcp_not_declared",
                )
            )
    if "settings" in manifest:
        issues += _schema_issues(manifest["settings"], ["settings"])
    properties = manifest.get("settings", {}).get("properties", {})
    for index, secret in enumerate(manifest.get("capabilities", {}).get("secrets", [])):
        if not (isinstance(properties.get(secret), dict) and properties[secret].get("writeOnly")):
            issues.append(
                Issue(
                    pointer(["capabilities", "secrets", index]),
                    f"The secret {secret!r} is not a writeOnly property of the settings schema.",
                    "unknown_secret",
                )
            )
    for dependency, text in manifest.get("dependencies", {}).items():
        if dependency == manifest["id"]:
            issues.append(
                Issue(
                    pointer(["dependencies", dependency]),
                    "A plugin cannot depend on itself.",
                    "self_dependency",
                )
            )
        try:
            parse_range(text)
        except ValueError as exc:
            issues.append(Issue(pointer(["dependencies", dependency]), str(exc), "bad_range"))
    return issues


def secret_fields(manifest: dict) -> list[str]:
    return sorted(
        name
        for name, spec in manifest.get("settings", {}).get("properties", {}).items()
        if isinstance(spec, dict) and spec.get("writeOnly")
    )


# --- capabilities -------------------------------------------------------------------------------

CAPABILITY_KINDS = ("egress", "mcp_servers", "secrets", "python")


def capabilities(manifest: dict) -> dict[str, list[str]]:
    """What a plugin may reach, in a comparable form (`python` lists its Python entrypoints)."""
    declared = manifest.get("capabilities", {})
    tools = manifest.get("provides", {}).get("tools", [])
    return {
        "egress": sorted(declared.get("egress", [])),
        "mcp_servers": sorted(declared.get("mcp_servers", [])),
        "secrets": sorted(declared.get("secrets", [])),
        "python": sorted(t["entrypoint"] for t in tools if t.get("type") == "python"),
    }


def capability_diff(old: dict[str, list[str]] | None, new: dict[str, list[str]]) -> dict[str, Any]:
    """What an upgrade adds and removes; `widened` when it adds anything (which needs approval)."""
    old = old or {kind: [] for kind in CAPABILITY_KINDS}
    added = {k: sorted(set(new.get(k, [])) - set(old.get(k, []))) for k in CAPABILITY_KINDS}
    removed = {k: sorted(set(old.get(k, [])) - set(new.get(k, []))) for k in CAPABILITY_KINDS}
    return {
        "added": {k: v for k, v in added.items() if v},
        "removed": {k: v for k, v in removed.items() if v},
        "widened": any(added.values()),
    }
