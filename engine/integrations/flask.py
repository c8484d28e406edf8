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
    import flask
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

    # -- the library's API ---------------------------------------------------------------

    @property
    def blueprint(self) -> Blueprint:
        """The Flask blueprint (this object: it is one)."""
        return self

    def register_cadence(
        self,
        rule: str,
        cadence: Any,
        *,
        methods: list[str] | None = None,
        score_factory: Callable[..., Any] | None = None,
        response_factory: Callable[[Any], Any] | None = None,
        error_handler: Callable[[Exception], Any] | None = None,
        endpoint: str | None = None,
    ) -> None:
        """Serve ``cadence`` at ``rule`` (GET by default). The score is
        ``score_factory(request, **url_params)``, else the cadence's score class built from the
        JSON body (POST/PUT/PATCH) and the URL parameters."""

        def view(**url_kwargs: Any) -> Any:
            try:
                if score_factory is not None:
                    score = score_factory(flask.request, **url_kwargs)
                else:
                    data: dict[str, Any] = {}
                    if flask.request.method in ("POST", "PUT", "PATCH"):
                        data = flask.request.get_json(silent=True) or {}
                    data.update(url_kwargs)
                    score = type(cadence.score)(**data)
                return _respond(cadence.run_sync(score), response_factory)
            except Exception as error:
                if error_handler is not None:
                    return error_handler(error)
                raise

        self.add_url_rule(
            rule, endpoint=endpoint or cadence.name, view_func=view, methods=methods or ["GET"]
        )


def _respond(score: Any, response_factory: Callable[[Any], Any] | None) -> Any:
    if response_factory is not None:
        return response_factory(score)
    return jsonify(score_payload(score))


def cadence_route(
    cadence: Any,
    *,
    score_factory: Callable[..., Any] | None = None,
    response_factory: Callable[[Any], Any] | None = None,
    error_handler: Callable[[Exception], Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Flask view: the score is ``score_factory(request)`` or what the view returns;
    the cadence runs on it and the response is ``response_factory(score)`` or the score as
    JSON. Errors go to ``error_handler(error)``, else propagate."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                if score_factory is not None:
                    score = score_factory(flask.request)
                else:
                    score = fn(*args, **kwargs)
                    if score is None:
                        raise ValueError(
                            "cadence_route decorated function must return score "
                            "or provide score_factory"
                        )
                return _respond(cadence.run_sync(score), response_factory)
            except Exception as error:
                if error_handler is not None:
                    return error_handler(error)
                raise

        return wrapper

    return decorate


def with_cadence(
    score_class: type, *, from_request: Callable[..., dict[str, Any]] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a view taking a score: it is built as ``score_class(**data)`` from
    ``from_request(request)``, else the JSON body (POST/PUT/PATCH) or query string, plus the URL
    parameters, and passed first."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            request = flask.request
            if from_request is not None:
                data = dict(from_request(request))
            elif request.method in ("POST", "PUT", "PATCH"):
                data = request.get_json(silent=True) or {}
            else:
                data = dict(request.args)
            data.update(kwargs)
            return fn(score_class(**data), *args)

        return wrapper

    return decorate


class CadenceExtension:
    """App-level settings (``app.extensions["cadence"]``): a default reporter and an error
    handler registered for :class:`CadenceError`."""

    def __init__(self, app: Any = None) -> None:
        self._reporter: Callable[..., Any] | None = None
        self._error_handler: Callable[..., Any] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:
        app.extensions = getattr(app, "extensions", {})
        app.extensions["cadence"] = self
        if self._error_handler is not None:
            app.register_error_handler(CadenceError, self._error_handler)

    def set_reporter(self, reporter: Callable[..., Any]) -> None:
        self._reporter = reporter

    def set_error_handler(self, handler: Callable[..., Any]) -> None:
        self._error_handler = handler

    @property
    def reporter(self) -> Callable[..., Any] | None:
        return self._reporter

    @property
    def error_handler(self) -> Callable[..., Any] | None:
        return self._error_handler


__all__ = ["CadenceBlueprint", "CadenceExtension", "cadence_route", "with_cadence"]
