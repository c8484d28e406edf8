"""Framework adapters behind one interface: `build(config) -> runtime`, `runtime.stream(...)` events.

The native adapter runs on Cadence's engine; LangGraph and the OpenAI Agents SDK come from
requirements-extras.txt, which `make run` installs unless it is run with `FRAMEWORKS=native`.
They are imported only when an instance uses them, and `framework_catalog()` tells the API and
the admin which of them this server has and how to add a missing one.
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

# What an operator runs to add a missing framework; the server picks it up after a restart.
INSTALL_HINT = (
    "Run `make run` (it installs requirements-extras.txt unless FRAMEWORKS=native is set), "
    "or `.venv/bin/pip install -r requirements-extras.txt`, then restart the server."
)


def framework_catalog() -> list[dict[str, object]]:
    """Every framework the product offers, whether this server can run it, and how to add it."""
    from orchestrators.models import OrchestratorInstance

    labels = dict(OrchestratorInstance.Framework.choices)
    return [
        {
            "name": name,
            "label": labels[name],
            "available": (available := framework_available(name)),
            "install": None if available else INSTALL_HINT,
        }
        for name in FRAMEWORKS
    ]
