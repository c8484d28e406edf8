"""``python -m engine plugin new|validate|pack``: scaffold, check and pack a Cadence plugin.

new DIRECTORY --id com.example.thing [--kind tenant|system]   a starter plugin
validate PATH                                                 a plugin directory or a .zip
pack DIRECTORY [-o FILE]                                      a deterministic ZIP, validated

The checks are the upload pipeline's own (`plugins.manifest`, `plugins.archive`: plain Python,
no Django), so a package that validates here is accepted by an upload, and the ZIP `pack` writes
is byte-identical for identical content (a re-upload is then a no-op instead of a 409).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SKIPPED = {"__pycache__", ".git", ".DS_Store"}


def _say(text: str, stream=None) -> None:
    print(text, file=stream or sys.stdout)  # noqa: T201 - a command line


def _pipeline():
    try:
        from plugins import archive, manifest
    except ImportError as exc:  # pragma: no cover - the engine installed without the platform
        raise SystemExit(
            f"error: the plugin commands need Cadence's plugins package ({exc})"
        ) from None
    return archive, manifest


def _files(directory: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part in SKIPPED for part in relative.parts) or path.suffix == ".zip":
            continue
        if path.is_symlink():
            raise SystemExit(f"error: {relative} is a symbolic link; packages carry files only")
        if path.is_file():
            files[relative.as_posix()] = path.read_bytes()
    return files


def _report(error) -> int:
    _say(f"invalid: {error.message}", sys.stderr)
    for issue in error.issues:
        _say(f"  {issue.path or '/'}: {issue.message} [{issue.code}]", sys.stderr)
    return 1


def cmd_validate(args: argparse.Namespace) -> int:
    archive, _ = _pipeline()
    target = Path(args.path)
    raw = target.read_bytes() if target.is_file() else archive.pack(_files(target))
    try:
        package = archive.inspect_package(raw)
    except archive.PackageError as exc:
        return _report(exc)
    _say(
        f"ok: {package.plugin_id} {package.version} ({package.manifest['kind']}), sha256 {package.sha256}"
    )
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    archive, _ = _pipeline()
    directory = Path(args.directory)
    raw = archive.pack(_files(directory))
    try:
        package = archive.inspect_package(raw)
    except archive.PackageError as exc:
        return _report(exc)
    output = Path(args.output or f"{package.plugin_id}-{package.version}.zip")
    output.write_bytes(raw)
    _say(f"packed {output} ({len(raw)} bytes, sha256 {package.sha256})")
    return 0


def _starter(plugin_id: str, kind: str) -> dict[str, bytes]:
    manifest = {
        "$schema": "https://cadence.local/schemas/cadence-plugin-1.json",
        "schema_version": 1,
        "id": plugin_id,
        "name": plugin_id.rsplit(".", 1)[-1].replace("-", " ").title(),
        "version": "0.1.0",
        "description": "What this plugin does.",
        "kind": kind,
        "provides": {
            "tools": [
                {
                    "name": "lookup",
                    "type": "http",
                    "description": "Look an item up.",
                    "method": "GET",
                    "url": "https://api.example.com/items/{item}",
                    "parameters": {
                        "type": "object",
                        "properties": {"item": {"type": "string", "maxLength": 100}},
                        "required": ["item"],
                        "additionalProperties": False,
                    },
                    "headers": {"Authorization": "Bearer {settings.api_key}"},
                },
                {
                    "name": "summarize",
                    "type": "code",
                    "description": "Look an item up and keep the useful part (sandboxed code).",
                    "source": "code/summarize.py",
                    "parameters": {
                        "type": "object",
                        "properties": {"item": {"type": "string"}},
                        "required": ["item"],
                    },
                },
            ],
            "prompts": [{"name": "style", "template": "Answer in two sentences."}],
        },
        "settings": {
            "type": "object",
            "properties": {"api_key": {"type": "string", "writeOnly": True, "minLength": 8}},
            "required": ["api_key"],
            "additionalProperties": False,
        },
        "capabilities": {"egress": ["api.example.com"], "secrets": ["api_key"]},
    }
    code = (
        "# Runs in the Monty sandbox: `args` and `settings` (secrets removed) are globals, and\n"
        "# call_tool(name, args) reaches this plugin's http tools; the last expression is the result.\n"
        "found = call_tool('lookup', {'item': args['item']})\n"
        "{'item': args['item'], 'status': found.get('status')}\n"
    )
    return {
        "cadence-plugin.json": (json.dumps(manifest, indent=2) + "\n").encode(),
        "code/summarize.py": code.encode(),
        "README.md": f"# {manifest['name']}\n\n`python -m engine plugin pack .` builds the ZIP.\n".encode(),
    }


def cmd_new(args: argparse.Namespace) -> int:
    _, manifest = _pipeline()
    directory = Path(args.directory)
    if directory.exists() and any(directory.iterdir()):
        raise SystemExit(f"error: {directory} exists and is not empty")
    files = _starter(args.id, args.kind)
    issues = manifest.manifest_issues(json.loads(files["cadence-plugin.json"]), set(files))
    if issues:
        raise SystemExit(f"error: {issues[0].path}: {issues[0].message}")
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    _say(f"created {directory} ({', '.join(sorted(files))})")
    return 0


def add_plugin_commands(commands) -> None:
    plugin = commands.add_parser("plugin", help="scaffold, validate and pack plugins")
    actions = plugin.add_subparsers(dest="plugin_command", required=True)
    new = actions.add_parser("new", help="a starter plugin directory")
    new.add_argument("directory")
    new.add_argument("--id", required=True, help="reverse-DNS id, e.g. com.example.thing")
    new.add_argument("--kind", choices=("tenant", "system"), default="tenant")
    new.set_defaults(func=cmd_new)
    validate = actions.add_parser("validate", help="check a plugin directory or ZIP")
    validate.add_argument("path")
    validate.set_defaults(func=cmd_validate)
    pack = actions.add_parser("pack", help="pack a plugin directory into a ZIP")
    pack.add_argument("directory")
    pack.add_argument("--output", "-o")
    pack.set_defaults(func=cmd_pack)
