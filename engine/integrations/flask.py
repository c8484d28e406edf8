"""Flask: serve a cadence from a blueprint.

```python
bp = CadenceBlueprint("orders", __name__)

@bp.cadence_route("/orders/<order_id>", checkout_cadence)
def create_order(order_id):
    return OrderScore(order_id=order_id)

app.register_blueprint(bp)
```
The view builds the score with the decorated function, runs the cadence to completion
(``run_sync``: Flask views are synchronous) and returns the final score as JSON.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import CadenceError
from ..reporters import MissingDependencyError
from .responses import error_payload, error_status, score_payload

try:
    from flask import Blueprint, jsonify
except ImportError as exc:  # pragma: no cover - exercised only without flask
    raise MissingDependencyError("flask", "engine.integrations.flask") from exc


class CadenceBlueprint(Blueprint):
    def cadence_route(
        self, rule: str, cadence: Any, *, methods: Sequence[str] = ("POST",), **options: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            def view(**kwargs: Any) -> Any:
                score = fn(**kwargs)
                try:
                    result = cadence.run_sync(score)
                except CadenceError as error:
                    return jsonify(error_payload(error)), error_status(error)
                return jsonify(score_payload(result))

            self.add_url_rule(
                rule,
                endpoint=options.pop("endpoint", fn.__name__),
                view_func=view,
                methods=list(methods),
                **options,
            )
            return fn

        return decorate


__all__ = ["CadenceBlueprint"]
