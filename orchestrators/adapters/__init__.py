"""Framework adapters behind one interface: `build(config) -> runtime`, `runtime.stream(...)` events.

The native adapter runs on Cadence's engine; LangGraph and the OpenAI Agents SDK are optional
extras (requirements-extras.txt), imported only when an instance uses them.
"""

from __future__ import annotations

from importlib import import_module

from orchestrators.runtime import Adapter

_ADAPTERS = {
    "cadence": ("orchestrators.adapters.cadence", "NativeAdapter"),
    "langgraph": ("orchestrators.adapters.langgraph", "LangGraphAdapter"),
    "openai_agents": ("orchestrators.adapters.openai_agents", "OpenAIAgentsAdapter"),
}
_instances: dict[str, Adapter] = {}


class UnknownFramework(LookupError):
    pass


def adapter_for(framework: str) -> Adapter:
    if framework not in _ADAPTERS:
        raise UnknownFramework(f"unknown framework {framework!r}")
    adapter = _instances.get(framework)
    if adapter is None:
        module, cls = _ADAPTERS[framework]
        adapter = _instances.setdefault(framework, getattr(import_module(module), cls)())
    return adapter


def framework_available(framework: str) -> bool:
    try:
        return adapter_for(framework).available()
    except (UnknownFramework, ImportError):
        return False


FRAMEWORKS = tuple(_ADAPTERS)
