"""A plugin's code notes as engine notes, and its flows and prompts as an orchestrator's.

A code note runs in the sandbox (plugins.sandbox). Its host functions are its only I/O:
`read(field)` returns a copy of a score field the manifest lists in `reads`, `write(field, value)`
stages a value for a field listed in `writes` (applied only when the code finishes, and only
with the field's own type), and `call_tool(name, args)` reaches the plugin's http tools. A
breach of a cap, a refused read or write, or a crash raises `CodeNoteError`, which fails the
step like any other note failure and is recorded on the run.

Notes are named `<plugin>.<note>` (the id's last segment), so they never shadow the agent's own
notes; flows name them that way. An orchestrator uses a plugin's flow with
`{"use": "<plugin id>/<flow name>"}` as its flow, and a plugin's prompt template by writing
`{{plugin:<plugin id>/<prompt name>}}` in its system prompt.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from cadence_site.errors import ApplicationError
from orchestrators.runtime import StepError

MAX_FIELD_BYTES = 256 * 1024
_PROMPT_REF = re.compile(r"\{\{plugin:([a-z0-9.-]+)/([a-z][a-z0-9_]*)\}\}")


class CodeNoteError(StepError):
    """A code note that failed: the message says which cap or rule it broke."""

    def __init__(self, message: str):
        super().__init__(message, "plugin_note_failed")


def note_name(plugin_id: str, note: str) -> str:
    return f"{plugin_id.rsplit('.', 1)[-1]}.{note}"


def _jsonable(value: Any) -> Any:
    encoded = json.dumps(value, default=str)
    if len(encoded) > MAX_FIELD_BYTES:
        raise CodeNoteError("A score field is too large to hand to a code note.")
    return json.loads(encoded)


def code_note(*, name: str, spec: dict, source: str, settings: dict[str, Any], tools: dict):
    from orchestrators.runtime import ToolContext
    from plugins.sandbox import SandboxError, run_code

    reads, writes = set(spec.get("reads", [])), set(spec.get("writes", []))

    async def note(score: Any) -> None:
        staged: dict[str, Any] = {}

        async def read(field: str) -> Any:
            if field not in reads or not hasattr(score, field):
                raise CodeNoteError(f"The note {name} may not read {field!r}.")
            return _jsonable(getattr(score, field))

        async def write(field: str, value: Any) -> None:
            if field not in writes or not hasattr(score, field):
                raise CodeNoteError(f"The note {name} may not write {field!r}.")
            current = getattr(score, field)
            if type(current) is not type(value):
                raise CodeNoteError(
                    f"{field} holds {type(current).__name__}, not {type(value).__name__}."
                )
            staged[field] = copy.deepcopy(value)

        async def call_tool(tool: str, args: dict | None = None) -> Any:
            fn = tools.get(tool)
            if fn is None:
                raise CodeNoteError(f"The plugin declares no http tool {tool!r}.")
            return await fn(args or {}, ToolContext(org_slug=""))

        try:
            await run_code(
                source,
                inputs={"settings": settings},
                host_functions={"read": read, "write": write, "call_tool": call_tool},
            )
        except SandboxError as exc:
            raise CodeNoteError(f"{name}: {exc.message}") from None
        for field, value in staged.items():
            setattr(score, field, value)

    note.__name__ = name.replace(".", "_")
    return note


def plugin_flow(instance) -> dict | None:
    """The flow an orchestrator takes from a locked plugin (`{"use": "id/name"}`), else None."""
    from plugins import selectors

    use = instance.flow.get("use") if isinstance(instance.flow, dict) else None
    if use is None:
        return None
    plugin_id, _, flow_name = str(use).partition("/")
    pinned = (instance.plugin_lock or {}).get(plugin_id)
    row = selectors.locked_row(plugin_id, pinned) if pinned else None
    if row is None:
        raise ApplicationError(
            f"The flow comes from {plugin_id}, which is not in this orchestrator's plugin set.",
            "unknown_plugin_flow",
            {"field": "flow"},
        )
    for flow in row.manifest.get("provides", {}).get("flows", []):
        if flow["name"] == flow_name:
            return flow["flow"]
    raise ApplicationError(
        f"{plugin_id} {row.version} provides no flow {flow_name!r}.",
        "unknown_plugin_flow",
        {"field": "flow"},
    )


def expand_prompt(instance) -> str:
    """The system prompt with `{{plugin:id/name}}` replaced by the locked plugin's template."""
    from plugins import selectors

    text = instance.system_prompt or ""
    if "{{plugin:" not in text:
        return text

    def template(match: re.Match) -> str:
        plugin_id, prompt = match.groups()
        pinned = (instance.plugin_lock or {}).get(plugin_id)
        row = selectors.locked_row(plugin_id, pinned) if pinned else None
        for item in row.manifest.get("provides", {}).get("prompts", []) if row else []:
            if item["name"] == prompt:
                return item["template"]
        raise ApplicationError(
            f"No prompt {prompt!r} from {plugin_id} in this orchestrator's plugin set.",
            "unknown_plugin_prompt",
            {"field": "system_prompt"},
        )

    return _PROMPT_REF.sub(template, text)
