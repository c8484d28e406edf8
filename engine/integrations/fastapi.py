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
    from fastapi import APIRouter
    from fastapi.responses import JSONResponse
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


__all__ = ["CadenceRouter"]
