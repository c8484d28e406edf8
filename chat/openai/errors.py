"""OpenAI-shaped errors: {"error": {"message", "type", "param", "code"}} with OpenAI's status codes."""

from __future__ import annotations

import logging
from typing import Any

from django.http import JsonResponse

from cadence_site.errors import ApplicationError

logger = logging.getLogger(__name__)


# --- errors ---------------------------------------------------------------------------------


def openai_error(
    status: int,
    message: str,
    *,
    code: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    response = JsonResponse(
        {"error": {"message": message, "type": type, "param": param, "code": code}}, status=status
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str = "invalid_request_error"):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def _error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_exceeded"
    return "api_error" if status >= 500 else "invalid_request_error"


def _application_error_payload(exc: ApplicationError) -> dict[str, Any]:
    return {
        "message": exc.message,
        "type": _error_type(exc.status_code),
        "param": None,
        "code": exc.code,
    }
