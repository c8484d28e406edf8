"""Command line for plugin authors: ``python -m engine <command>``.

diagram TARGET [--format mermaid|dot]     TARGET: module:attr (a Cadence or a flow dict) or flow.json
validate TARGET [--registry module:attr]  TARGET: flow.json, module:attr, or a module (all cadences in it)
hash FLOW.json                            canonical SHA-256 of a flow
schema                                    print the flow JSON Schema
new note NAME [--retry N] [--timeout S] [--sync]
new cadence NAME
init DIRECTORY                            a starter package: notes.py, cadences.py, flow.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import keyword
import re
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .cadence import Cadence
from .diagram import to_dot, to_mermaid
from .flow import flow_hash, schema_text, validate_flow
from .flow.hashing import load


class CliError(Exception):
    pass


def _import_target(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r}: {exc}") from exc
    if not attr:
        return module
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj() if callable(obj) and not isinstance(obj, Cadence) else obj


def _load_target(spec: str) -> Any:
    if spec.endswith(".json") or Path(spec).is_file():
        try:
            return load(Path(spec).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CliError(f"cannot read {spec}: {exc}") from exc
        except ValueError as exc:
            raise CliError(f"{spec} is not valid JSON: {exc}") from exc
    if "." not in sys.path:
        sys.path.insert(0, ".")  # so that `module:attr` finds the author's code in the cwd
    return _import_target(spec)


def _as_flow(obj: Any) -> Any:
    return obj.describe() if isinstance(obj, Cadence) else obj


def cmd_diagram(args: argparse.Namespace) -> int:
    # A Cadence is drawn in the library's layout, a flow in the engine's.
    target = _load_target(args.target)
    render = to_dot if args.format == "dot" else to_mermaid
    text = render(target)
    if not text.endswith("\n"):
        text += "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")  # noqa: T201
    else:
        sys.stdout.write(text)
    return 0


def _targets(obj: Any, label: str) -> list[tuple[str, Any]]:
    if isinstance(obj, (Cadence, dict)):
        return [(label, _as_flow(obj))]
    found = [
        (f"{label}:{name}", _as_flow(value))
        for name, value in vars(obj).items()
        if isinstance(value, Cadence)
    ]
    if not found:
        raise CliError(f"no cadences found in {label}")
    return found


def cmd_validate(args: argparse.Namespace) -> int:
    registry = _load_target(args.registry) if args.registry else None
    failed = False
    for label, flow in _targets(_load_target(args.target), args.target):
        issues = validate_flow(flow, registry)
        if issues:
            failed = True
            print(f"INVALID {label}: {len(issues)} problem(s)")  # noqa: T201
            for issue in issues:
                print(f"  {issue.path or '/'}: {issue.message} [{issue.code}]")  # noqa: T201
        else:
            print(f"OK {label} sha256={flow_hash(flow)}")  # noqa: T201
    return 1 if failed else 0


def cmd_hash(args: argparse.Namespace) -> int:
    print(flow_hash(_as_flow(_load_target(args.target))))  # noqa: T201
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text())
    return 0


def _identifier(name: str) -> str:
    ident = re.sub(r"\W+", "_", name.strip()).strip("_").lower()
    if not ident or ident[0].isdigit() or keyword.iskeyword(ident):
        raise CliError(f"{name!r} cannot be turned into a Python name")
    return ident


def note_source(
    name: str, retry: int | None, timeout: float | None, sync: bool, fallback: str | None = None
) -> str:
    ident = _identifier(name)
    options = []
    if retry is not None:
        options.append(f"retry={retry}")
    if timeout is not None:
        options.append(f"timeout={timeout:g}")
    if fallback is not None:
        options.append(f"fallback={{'default': {fallback!r}}}")
    decorator = f"@note({', '.join(options)})" if options else "@note"
    head = "def" if sync else "async def"
    return (
        "from __future__ import annotations\n\n"
        "from engine import note\n\n\n"
        f"{decorator}\n"
        f"{head} {ident}(score) -> None:\n"
        f'    """{name}: read what you need from the score and write your results back to it."""\n'
        "    raise NotImplementedError\n"
    )


def cadence_source(name: str) -> str:
    ident = _identifier(name)
    cls = "".join(part.title() for part in ident.split("_")) + "Score"
    return (
        "from __future__ import annotations\n\n"
        "from dataclasses import dataclass\n\n"
        "from engine import Cadence, Score, note\n\n\n"
        "@dataclass\n"
        f"class {cls}(Score):\n"
        '    status: str = "pending"\n\n\n'
        "@note\n"
        f"async def start(score: {cls}) -> None:\n"
        '    score.status = "started"\n\n\n'
        f'{ident}_cadence = Cadence("{ident}", {cls}()).then("start", start)\n'
    )


def cmd_new(args: argparse.Namespace) -> int:
    if args.kind == "note":
        source = note_source(args.name, args.retry, args.timeout, args.sync, args.fallback)
    else:
        source = cadence_source(args.name)
    if args.output:
        path = Path(args.output)
        if path.exists() and not args.force:
            raise CliError(f"{path} already exists (--force overwrites it)")
        path.write_text(source, encoding="utf-8")
        print(f"wrote {path}")  # noqa: T201
    else:
        sys.stdout.write(source)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    root = Path(args.directory)
    if root.exists() and any(root.iterdir()):
        raise CliError(f"{root} exists and is not empty")
    root.mkdir(parents=True, exist_ok=True)
    (root / "__init__.py").write_text("", encoding="utf-8")
    (root / "cadences.py").write_text(
        cadence_source(root.name.replace("-", "_") or "main"), encoding="utf-8"
    )
    flow = {"name": "example", "steps": [{"then": "start"}]}
    (root / "flow.json").write_text(json.dumps(flow, indent=2) + "\n", encoding="utf-8")
    print(f"created {root}/ (cadences.py, flow.json)")  # noqa: T201
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Cadence engine tools")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    diagram = commands.add_parser("diagram", help="draw a cadence or flow")
    diagram.add_argument("target", help="module:attr or flow.json")
    diagram.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    diagram.add_argument("--output", "-o", help="write to this file instead of stdout")
    diagram.set_defaults(func=cmd_diagram)

    validate = commands.add_parser("validate", help="validate flows or cadences")
    validate.add_argument("target", help="flow.json, module:attr or module")
    validate.add_argument(
        "--registry", help="module:attr of a NoteRegistry or a name->callable mapping"
    )
    validate.set_defaults(func=cmd_validate)

    hash_ = commands.add_parser("hash", help="canonical hash of a flow")
    hash_.add_argument("target")
    hash_.set_defaults(func=cmd_hash)

    schema = commands.add_parser("schema", help="print the flow JSON Schema")
    schema.set_defaults(func=cmd_schema)

    new = commands.add_parser("new", help="scaffold a note or a cadence")
    new.add_argument("kind", choices=("note", "cadence"))
    new.add_argument("name")
    new.add_argument("--retry", type=int, help="max attempts")
    new.add_argument("--timeout", type=float, help="seconds")
    new.add_argument("--sync", action="store_true", help="a sync note instead of async")
    new.add_argument("--fallback", help="a fallback default value for the note")
    new.add_argument("--output", "-o", help="write to this file instead of stdout")
    new.add_argument("--force", "-f", action="store_true", help="overwrite --output")
    new.set_defaults(func=cmd_new)

    init = commands.add_parser("init", help="create a starter package")
    init.add_argument("directory")
    init.set_defaults(func=cmd_init)
    __import__("engine.plugin_commands").plugin_commands.add_plugin_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
