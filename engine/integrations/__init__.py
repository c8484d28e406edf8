"""Web framework integrations: ``engine.integrations.fastapi``, ``.flask`` and ``.django``.

Each imports its framework only when imported itself; ``import engine`` never does.
"""

from __future__ import annotations

from typing import Any

_FASTAPI_NAMES = (
    "CadenceDependency",
    "CadenceMiddleware",
    "CadenceRoute",
    "CadenceRouter",
    "cadence_endpoint",
    "with_cadence",
)


def __getattr__(name: str) -> Any:
    # As in the library: ``from engine.integrations import CadenceDependency`` imports FastAPI's
    # integration (and FastAPI) only then.
    if name in _FASTAPI_NAMES or name == "fastapi":
        from . import fastapi

        return fastapi if name == "fastapi" else getattr(fastapi, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
