"""A plugin's declared tools as orchestrator tools (`orchestrators.tools.make_tool`).

- `http`: one request through the outbound client (egress policy, timeouts, no redirects), to a
  host the manifest declares; `{arg}` placeholders URL-encoded, `{settings.NAME}` headers filled
  from the orchestrator's settings for the plugin (secrets decrypted only here, never logged).
- `python` (system plugins, installed by operators): `module:function` from the package's
  `python/` folder, loaded from the cached ZIP with zipimport, called as `fn(args, settings)`.
- `code`: the package's `code/…py` source, run in the sandbox (plugins.sandbox) with `args` and
  the non-secret `settings` as globals and `call_tool(name, args)` reaching the plugin's own
  http tools as the only host function.

Tools built with `make_tool` run like the built-ins, so a plugin's calls are recorded as tool
steps of the run.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import types
import zipimport
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from cadence_site.outbound import EgressDenied, async_client
from orchestrators.runtime import Tool, ToolContext
from orchestrators.tools import idempotency_headers, make_tool
from plugins import storage
from plugins.manifest import host_listed, secret_fields

MAX_BODY_CHARS = 8000
DEFAULT_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SETTING = re.compile(r"\{settings\.([a-z][a-z0-9_]*)\}")
_modules: dict[tuple[str, str], types.ModuleType] = {}


def _fill_url(template: str, args: dict[str, Any]) -> tuple[str, set[str]]:
    used: set[str] = set()

    def value(match: re.Match) -> str:
        used.add(match.group(1))
        return quote(str(args.get(match.group(1), "")), safe="")

    return _PLACEHOLDER.sub(value, template), used


def _scrubber(settings: dict[str, Any], secrets: Iterable[str]):
    """Replaces the plugin's secret values in an upstream's answer: an API that echoes the key it
    got (httpbin, "invalid key …" errors) would otherwise put it in the tool's result, which is
    sent on to the model and recorded in the run's steps, exports and live frames."""
    values = sorted(
        {
            variant
            for name in secrets
            if isinstance(settings.get(name), str) and len(settings[name]) >= 4
            for variant in (settings[name], json.dumps(settings[name])[1:-1])
        },
        key=len,
        reverse=True,
    )

    def scrub(text: str) -> str:
        for value in values:
            if value in text:
                text = text.replace(value, "[redacted]")
        return text

    return scrub


def http_tool_call(
    spec: dict, egress: list[str], settings: dict[str, Any], secrets: Iterable[str] = ()
):
    """`secrets`: the names of the settings the plugin's schema marks secret (`writeOnly`)."""
    method = spec["method"]
    timeout = float(spec.get("timeout_seconds", 15))
    scrub = _scrubber(settings, secrets)

    async def call(args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        url, used = _fill_url(spec["url"], args)
        host = (urlsplit(url).hostname or "").lower()
        if not host_listed(host, egress):  # the template's host is literal; belt and braces
            return {"error": f"The plugin may not call {host}."}
        headers = {
            name: _SETTING.sub(lambda m: str(settings.get(m.group(1), "")), template)
            for name, template in spec.get("headers", {}).items()
        }
        headers.update(idempotency_headers(context))
        rest = {k: v for k, v in args.items() if k not in used}
        request: dict[str, Any] = {"headers": headers}
        if method in ("POST", "PUT", "PATCH"):
            request["json"] = rest
        elif rest:
            request["params"] = {
                k: v if isinstance(v, str) else json.dumps(v) for k, v in rest.items()
            }
        try:
            async with async_client(timeout) as client:
                async with client.stream(method, url, **request) as response:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_BODY_CHARS * 4:
                            break
        except EgressDenied as exc:
            return {"error": exc.message}
        except httpx.TimeoutException:
            return {"error": "The request timed out."}
        except httpx.HTTPError as exc:
            return {"error": f"The request failed ({type(exc).__name__})."}
        text = scrub(body.decode("utf-8", errors="replace"))
        result: dict[str, Any] = {"status": response.status_code}
        if "json" in response.headers.get("content-type", ""):
            try:
                result["json"] = json.loads(text)
                return result
            except ValueError:
                pass
        result["body"] = text[:MAX_BODY_CHARS]
        result["truncated"] = len(text) > MAX_BODY_CHARS
        return result

    return call


def _load_python(plugin, entrypoint: str):
    module_path, function = entrypoint.split(":")
    key = (plugin.sha256, module_path)
    module = _modules.get(key)
    if module is None:
        archive = storage.package_path(key=plugin.storage_key, sha256=plugin.sha256)
        parts = module_path.split(".")
        importer = zipimport.zipimporter("/".join([str(archive), "python", *parts[:-1]]))
        code = importer.get_code(parts[-1])
        module = types.ModuleType(
            f"cadence_plugin_{plugin.sha256[:16]}_{module_path.replace('.', '_')}"
        )
        exec(code, module.__dict__)  # noqa: S102 - operator-installed system plugin code
        _modules[key] = module
    return getattr(module, function)


def python_tool_call(plugin, spec: dict, settings: dict[str, Any]):
    fn = _load_python(plugin, spec["entrypoint"])

    async def call(args: dict[str, Any], context: ToolContext) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await fn(args, settings)
        return await asyncio.to_thread(fn, args, settings)

    return call


def code_tool_call(plugin, spec: dict, settings: dict[str, Any], siblings: dict[str, Any]):
    from plugins.sandbox import SandboxError, run_code

    source = code_source(plugin, spec["source"])
    secrets = set(secret_fields(plugin.manifest))
    visible = {k: v for k, v in settings.items() if k not in secrets}

    async def call(args: dict[str, Any], context: ToolContext) -> Any:
        async def call_tool(name: str, tool_args: dict | None = None) -> Any:
            fn = siblings.get(name)
            if fn is None:
                return {"error": f"The plugin declares no http tool {name!r}."}
            return await fn(tool_args or {}, context)

        try:
            ran = await run_code(
                source,
                inputs={"args": args, "settings": visible},
                host_functions={"call_tool": call_tool},
            )
        except SandboxError as exc:
            return {"error": exc.message, "code": exc.code}
        return (
            ran["result"]
            if not ran["output"]
            else {"result": ran["result"], "output": ran["output"]}
        )

    return call


def code_source(plugin, name: str) -> str:
    import zipfile

    archive = storage.package_path(key=plugin.storage_key, sha256=plugin.sha256)
    with zipfile.ZipFile(archive) as package, package.open(name) as member:
        return member.read(256 * 1024).decode("utf-8")


def build_tool(*, name: str, plugin, spec: dict, settings: dict[str, Any]) -> Tool:
    parameters = spec.get("parameters") or DEFAULT_PARAMETERS
    description = f"{spec['description']} (plugin {plugin.plugin_id} {plugin.version})"
    egress = plugin.manifest.get("capabilities", {}).get("egress", [])
    if spec["type"] == "http":
        fn = http_tool_call(spec, egress, settings, secret_fields(plugin.manifest))
    elif spec["type"] == "python":
        fn = python_tool_call(plugin, spec, settings)
    else:
        siblings = {
            t["name"]: http_tool_call(t, egress, settings, secret_fields(plugin.manifest))
            for t in plugin.manifest.get("provides", {}).get("tools", [])
            if t["type"] == "http"
        }
        fn = code_tool_call(plugin, spec, settings, siblings)
    return make_tool(name, description, parameters, fn)
