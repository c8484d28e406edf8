"""Django and Django REST Framework: serve a cadence as an endpoint.

The only engine module that imports Django. Plain Django (an async view)::

    path("orders/<order_id>/", cadence_view(checkout_cadence, lambda request, order_id: OrderScore(order_id)))

DRF (a class-based ``APIView``, so authentication, permissions and throttling apply)::

    OrderApi = cadence_api_view(checkout_cadence, lambda request, order_id: OrderScore(order_id),
                                permission_classes=[IsAuthenticated])
    path("orders/<order_id>/", OrderApi.as_view())

The score factory receives the request and the URL keyword arguments and may be async (plain
view) or sync. The response is the final score as JSON, or the project's error shape.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import CadenceError
from ..reporters import MissingDependencyError
from .responses import error_payload, error_status, score_payload

try:
    from django.http import HttpRequest, HttpResponseNotAllowed, JsonResponse
except ImportError as exc:  # pragma: no cover - exercised only without Django
    raise MissingDependencyError("Django", "engine.integrations.django") from exc

ScoreFactory = Callable[..., Any]


def cadence_view(
    cadence: Any, score_factory: ScoreFactory, *, methods: Sequence[str] = ("POST",)
) -> Callable[..., Any]:
    """An async Django view that runs ``cadence`` on ``score_factory(request, **kwargs)``."""
    allowed = [m.upper() for m in methods]

    async def view(request: HttpRequest, **kwargs: Any) -> Any:
        if request.method not in allowed:
            return HttpResponseNotAllowed(allowed)
        score = score_factory(request, **kwargs)
        if inspect.isawaitable(score):
            score = await score
        try:
            result = await cadence.run(score)
        except CadenceError as error:
            return JsonResponse(error_payload(error), status=error_status(error))
        return JsonResponse(score_payload(result), safe=False)

    view.csrf_exempt = True  # type: ignore[attr-defined]  # an API endpoint; authenticate it instead
    return view


def cadence_api_view(
    cadence: Any, score_factory: ScoreFactory, *, methods: Sequence[str] = ("post",), **attrs: Any
) -> type:
    """A DRF ``APIView`` subclass whose handlers run ``cadence``; ``attrs`` set view attributes
    such as ``permission_classes``."""
    from rest_framework.response import Response
    from rest_framework.views import APIView

    def handle(self: Any, request: Any, **kwargs: Any) -> Any:
        score = score_factory(request, **kwargs)
        try:
            result = cadence.run_sync(score)
        except CadenceError as error:
            return Response(error_payload(error), status=error_status(error))
        return Response(score_payload(result))

    namespace: dict[str, Any] = {m.lower(): handle for m in methods}
    namespace.update(attrs)
    return type(f"{cadence.name.title().replace('_', '')}CadenceApi", (APIView,), namespace)


__all__ = ["cadence_api_view", "cadence_view"]
