"""One error type and one JSON shape for every 4xx and 5xx: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, ValidationError
from django.db import InterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import Http404, HttpResponse, JsonResponse
from rest_framework import exceptions as drf

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """A domain error a caller can act on: a stable code, a human message, optional details."""

    status_code = 400

    def __init__(
        self,
        message: str,
        code: str = "invalid",
        extra: dict[str, Any] | None = None,
        *,
        status: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.extra = extra or {}
        if status is not None:
            self.status_code = status


class NotFoundError(ApplicationError):
    status_code = 404

    def __init__(
        self, message: str = "Not found.", code: str = "not_found", extra: dict | None = None
    ):
        super().__init__(message, code, extra)


class ForbiddenError(ApplicationError):
    status_code = 403

    def __init__(
        self,
        message: str = "You do not have permission to perform this action.",
        code: str = "permission_denied",
        extra: dict | None = None,
    ):
        super().__init__(message, code, extra)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": details if details is not None else {},
        }
    }


def openai_error_body(message: str, *, type: str, code: str) -> dict[str, Any]:  # noqa: A002
    """The error shape of the OpenAI-compatible surface (/v1), for the errors answered before
    its views (chat/openai/errors.py has the views' own)."""
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict | None = None
) -> JsonResponse:
    response = JsonResponse(error_body(code, message, details), status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


_DRF_CODES = {
    drf.ParseError: "malformed_json",
    drf.AuthenticationFailed: "authentication_failed",
    drf.NotAuthenticated: "not_authenticated",
    drf.PermissionDenied: "permission_denied",
    drf.NotFound: "not_found",
    drf.MethodNotAllowed: "method_not_allowed",
    drf.NotAcceptable: "not_acceptable",
    drf.UnsupportedMediaType: "unsupported_media_type",
    drf.Throttled: "rate_limited",
    drf.ValidationError: "invalid",
}


def _drf_code(exc: drf.APIException) -> str:
    detail_code = exc.get_codes() if isinstance(exc.detail, str | drf.ErrorDetail) else None
    if isinstance(detail_code, str) and detail_code not in (
        "invalid",
        "error",
        "parse_error",
        "not_found",
        "permission_denied",
        "not_authenticated",
        "authentication_failed",
    ):
        return detail_code
    for cls in type(exc).__mro__:
        if cls in _DRF_CODES:
            return _DRF_CODES[cls]
    return "error"


# --- the database out of reach ---------------------------------------------------------------

# How long a client is asked to wait before retrying when the database cannot be reached.
DATABASE_RETRY_SECONDS = 2
# SQLSTATE classes and codes that say the server cannot serve now, not that the statement was
# wrong: 08 connection exception, 53 insufficient resources (53300 too many connections),
# 57P01-57P03 administrator shutdown, crash shutdown, cannot connect now (starting, recovering).
_UNAVAILABLE_CLASSES = ("08", "53")
_UNAVAILABLE_CODES = frozenset({"57P01", "57P02", "57P03"})


def database_unavailable(exc: BaseException | None) -> bool:
    """Whether `exc` says the database could not be reached or would not take the connection
    (refused, full, shutting down, the connection lost), as opposed to a statement that failed
    (a timeout, a deadlock, bad SQL), which stays a 500. libpq's own failures (connecting, a
    connection lost mid-statement) carry no SQLSTATE."""
    import psycopg

    if isinstance(exc, InterfaceError):  # Django's "connection already closed"
        return True
    if isinstance(exc, DatabaseOperationalError):
        exc = exc.__cause__
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_CODES


def database_unavailable_response(request) -> HttpResponse:
    """503 with Retry-After, in the shape of the surface `request` was made to."""
    message = "The database cannot be reached right now. Retry shortly."
    if request.path.startswith("/v1/"):  # OpenAI's clients retry a 503
        response: HttpResponse = JsonResponse(
            openai_error_body(message, type="api_error", code="database_unavailable"),
            status=503,
        )
    elif _wants_json(request):
        response = error_response(503, "database_unavailable", message)
    else:
        response = HttpResponse(
            f"<!doctype html><title>Service unavailable</title><h1>Service unavailable</h1>"
            f"<p>{message}</p>",
            status=503,
            content_type="text/html; charset=utf-8",
        )
    response["Retry-After"] = str(DATABASE_RETRY_SECONDS)
    return response


def api_exception_handler(exc: Exception, context: dict) -> JsonResponse | None:
    """DRF's handler, then every exception mapped to the one shape; unknown ones are a logged 500."""
    if isinstance(exc, ApplicationError):
        return error_response(
            exc.status_code, exc.code, exc.message, exc.extra, getattr(exc, "headers", None)
        )
    if isinstance(exc, RequestDataTooBig):
        return _too_large()
    if isinstance(exc, ValidationError):
        exc = drf.ValidationError(
            detail=exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    if isinstance(exc, PermissionDenied):
        exc = drf.PermissionDenied()
    # Imported here: rest_framework.views imports the authentication classes, which import services.
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None and database_unavailable(exc):
        logger.error(
            "database unavailable: answered 503",
            extra={"error": f"{type(exc).__name__}: {exc}"[:300]},
        )
        return database_unavailable_response(context["request"])
    if response is None:
        logger.exception("unhandled error in API view", exc_info=exc)
        return error_response(500, "server_error", "An unexpected error occurred.")
    assert isinstance(exc, drf.APIException)
    if isinstance(exc, drf.ValidationError):
        message, details = "The request is invalid.", exc.detail
    elif isinstance(exc, drf.ParseError):
        message, details = "The request body is not valid JSON.", {"reason": str(exc.detail)}
    else:
        message, details = str(exc.detail), {}
    headers = {
        k: v for k, v in response.items() if k in ("WWW-Authenticate", "Retry-After", "Allow")
    }
    return error_response(response.status_code, _drf_code(exc), message, details, headers)


def too_large_payload(path: str, limit: int) -> dict[str, Any]:
    message = f"The request body exceeds the limit of {limit} bytes."
    if path.startswith("/v1/"):
        return openai_error_body(message, type="invalid_request_error", code="payload_too_large")
    return error_body("payload_too_large", message, {"limit_bytes": limit})


def _too_large() -> JsonResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return error_response(
        413,
        "payload_too_large",
        f"The request body exceeds the limit of {limit} bytes.",
        {"limit_bytes": limit},
    )


PLUGIN_UPLOAD_PATH = re.compile(r"^/api/v1/orgs/[^/]+/plugins/$")


class BodySizeLimitMiddleware:
    """413 from the declared length, before any parser reads the body. Sync and async."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        return self._refusal(request) or self.get_response(request)

    async def __acall__(self, request):
        return self._refusal(request) or await self.get_response(request)

    @staticmethod
    def _refusal(request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if request.method == "POST" and PLUGIN_UPLOAD_PATH.match(request.path):
            # A plugin package (plugins.archive caps the package itself).
            limit = settings.CADENCE_PLUGIN_MAX_UPLOAD_BYTES
        length = request.META.get("CONTENT_LENGTH")
        if limit is None or not length:
            return None
        try:
            too_large = int(length) > limit
        except ValueError:
            return error_response(400, "bad_request", "Content-Length is not a number.")
        if too_large and request.path.startswith("/v1/"):
            return JsonResponse(too_large_payload(request.path, limit), status=413)
        if too_large and not request.path.startswith(("/admin/", "/orgs/")):
            return _too_large()
        return None


def _wants_json(request) -> bool:
    return request.path.startswith(
        ("/api/", "/v1/", "/healthz", "/readyz")
    ) or "application/json" in request.headers.get("Accept", "")


def handler404(request, exception=None):
    if _wants_json(request):
        return error_response(404, "not_found", "Not found.")
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler403(request, exception=None):
    if _wants_json(request):
        return error_response(
            403, "permission_denied", "You do not have permission to perform this action."
        )
    from django.views.defaults import permission_denied

    return permission_denied(request, exception)


def handler400(request, exception=None):
    if _wants_json(request):
        return error_response(400, "bad_request", "Bad request.")
    from django.views.defaults import bad_request

    return bad_request(request, exception)


def handler500(request):
    # Django calls it inside the `except` that caught the exception (response_for_exception, on
    # the synchronous path: pages, DRF), so sys.exc_info() holds it; Django then logs the
    # response with the exception's traceback. /v1 decides it in cadence_site/handlers.py.
    if database_unavailable(sys.exc_info()[1]):
        return database_unavailable_response(request)
    if _wants_json(request):
        return error_response(500, "server_error", "An unexpected error occurred.")
    from django.views.defaults import server_error

    return server_error(request)


def csrf_failure(request, reason=""):
    return error_response(403, "csrf_failed", "CSRF verification failed.", {"reason": reason})
