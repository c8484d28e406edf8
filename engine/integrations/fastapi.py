"""FastAPI: serve a cadence as an endpoint.

```python
router = CadenceRouter()

@router.cadence("/orders/{order_id}", checkout_cadence)
async def create_order(order_id: str):
    return OrderScore(order_id=order_id)   # the initial score

app.include_router(router)
```
The decorated function builds the initial score from the request (its parameters are FastAPI's
usual path/query/body parameters); the endpoint runs the cadence and returns the final score as
JSON. Engine errors become ``{"error": {"code", "message", "details"}}`` with 500/503/504.

The library's helpers are here too: ``cadence_endpoint``, ``with_cadence``,
``CadenceDependency``, ``CadenceMiddleware`` and ``CadenceRoute``. Unlike the library's, they run
the cadence on the score they were given (the library's ``cadence_endpoint`` runs the cadence's
own score, ignoring the factory's) and keep the cadence's hooks and checkpoint store.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import CadenceError
from ..reporters import MissingDependencyError
from .responses import error_payload, error_status, score_payload

try:
    from fastapi import APIRouter, HTTPException
    from fastapi.responses import JSONResponse
    from fastapi.routing import APIRoute
except ImportError as exc:  # pragma: no cover - exercised only without fastapi
    raise MissingDependencyError("fastapi", "engine.integrations.fastapi") from exc


class CadenceRouter(APIRouter):
    def cadence(
        self, path: str, cadence: Any, *, methods: Sequence[str] = ("POST",), **route_kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            async def endpoint(*args: Any, **kwargs: Any) -> Any:
                score = fn(*args, **kwargs)
                if inspect.isawaitable(score):
                    score = await score
                try:
                    result = await cadence.run(score)
                except CadenceError as error:
                    return JSONResponse(error_payload(error), status_code=error_status(error))
                return score_payload(result)

            # Resolve string annotations against the user's module, not this one.
            endpoint.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
            self.add_api_route(path, endpoint, methods=list(methods), **route_kwargs)
            return fn

        return decorate


class CadenceRoute(APIRoute):
    """A route class for endpoints that run cadences (``route_class=CadenceRoute``)."""


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def cadence_endpoint(
    cadence: Any,
    score_factory: Callable[..., Any],
    response_mapper: Callable[[Any], Any] | None = None,
    error_handler: Callable[[Exception], Any] | None = None,
) -> Callable[..., Any]:
    """An endpoint running ``cadence`` on ``score_factory(**request params)`` (the factory's
    parameters are the endpoint's), answering ``response_mapper(score)`` or the score. Errors go
    to ``error_handler(error)``, else become a 500 ``HTTPException`` with ``str(error)``."""

    async def endpoint(**kwargs: Any) -> Any:
        try:
            score = await _maybe_await(score_factory(**kwargs))
            result = await cadence.run(score)
            return response_mapper(result) if response_mapper is not None else result
        except Exception as error:
            if error_handler is not None:
                return error_handler(error)
            raise HTTPException(status_code=500, detail=str(error)) from error

    endpoint.__signature__ = inspect.signature(score_factory, eval_str=True).replace(  # type: ignore[attr-defined]
        return_annotation=inspect.Signature.empty
    )
    endpoint.__name__ = getattr(score_factory, "__name__", "endpoint")
    return endpoint


def with_cadence(
    cadence_factory: Callable[[Any], Any],
    response_mapper: Callable[[Any], Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate an endpoint that returns the initial score: the cadence
    ``cadence_factory(score)`` runs on it and the final score (or ``response_mapper(score)``)
    is the response."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            score = await _maybe_await(fn(*args, **kwargs))
            result = await cadence_factory(score).run(score)
            return response_mapper(result) if response_mapper is not None else result

        return wrapper

    return decorate


class CadenceDependency:
    """A FastAPI dependency (``Depends(CadenceDependency(cadence))``) giving the endpoint an
    ``execute(score)`` coroutine function that runs the cadence on that score."""

    def __init__(self, cadence: Any) -> None:
        self._cadence = cadence

    async def __call__(self) -> Callable[[Any], Any]:
        cadence = self._cadence

        async def execute(score: Any) -> Any:
            return await cadence.run(score)

        return execute


class CadenceMiddleware:
    """ASGI middleware holding a request-wide ``reporter`` and ``error_handler``; as in the
    library, requests pass through unchanged."""

    def __init__(
        self,
        app: Any,
        reporter: Callable[..., Any] | None = None,
        error_handler: Callable[..., Any] | None = None,
    ) -> None:
        self.app = app
        self.reporter = reporter
        self.error_handler = error_handler

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


__all__ = [
    "CadenceDependency",
    "CadenceMiddleware",
    "CadenceRoute",
    "CadenceRouter",
    "cadence_endpoint",
    "with_cadence",
]
