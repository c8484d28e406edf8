"""LLM providers behind one interface (``orchestrators.runtime.ChatProvider``).

``provider_for(settings)`` builds the provider a configuration names:

- ``openai_compatible``: any OpenAI-compatible endpoint through the official SDK;
- ``offline``: a deterministic built-in model (no network) for demos and tests;
- ``anthropic``: Anthropic's API, when the optional ``anthropic`` package is installed.
"""

from __future__ import annotations

import importlib.util

from orchestrators.runtime import ChatProvider, LLMError, LLMSettings

PROVIDERS = ("openai_compatible", "offline", "anthropic")

# The package each provider needs beyond the project's own requirements.
_OPTIONAL_PACKAGES = {"anthropic": "anthropic"}


def provider_available(name: str) -> bool:
    """Whether ``name`` is a known provider whose package is installed."""
    if name not in PROVIDERS:
        return False
    package = _OPTIONAL_PACKAGES.get(name)
    return package is None or importlib.util.find_spec(package) is not None


def provider_for(settings: LLMSettings) -> ChatProvider:
    """The provider for ``settings``; LLMError ``unknown_provider`` or ``provider_not_installed``."""
    name = settings.provider
    if name not in PROVIDERS:
        raise LLMError(
            f"Unknown LLM provider {name!r}; expected one of {', '.join(PROVIDERS)}.",
            "unknown_provider",
        )
    if not provider_available(name):
        raise LLMError(
            f"The {name} provider needs the {_OPTIONAL_PACKAGES[name]!r} package, which is not installed.",
            "provider_not_installed",
        )
    if name == "offline":
        from orchestrators.llm.offline import OfflineProvider

        # "<model>@<n>ms" paces the demo model's tokens, to watch streaming (and test cancelling).
        _, _, pace = settings.model.partition("@")
        delay = int(pace[:-2]) / 1000 if pace.endswith("ms") and pace[:-2].isdigit() else 0.0
        return OfflineProvider(settings, token_delay=min(delay, 2.0))
    if name == "anthropic":
        from orchestrators.llm.anthropic import AnthropicProvider

        return AnthropicProvider(settings)
    from orchestrators.llm.openai_compatible import OpenAICompatibleProvider

    return OpenAICompatibleProvider(settings)


__all__ = ["PROVIDERS", "provider_available", "provider_for"]
