"""The OpenAPI 3.1 schema at /api/schema/: what drf-spectacular derives, made to tell the truth.

- Component names come from where a serializer is declared: a view's nested ``InputSerializer``
  is ``<View>Input`` (``MemberListInput``), so two views' inputs never share one name.
- Descriptions are only what a view declares with ``extend_schema``: docstrings are written for
  the people who maintain the code, not for the people who call it.
- The two ways to authenticate are security schemes (Swagger's Authorize button): a bearer API
  key (``ck_…``) and the browser session cookie (unsafe methods also need the CSRF token).
- Every operation documents the errors it can answer, in the one error shape (``Error``): 400
  with a body or query parameters, 401 and 403 when it needs a caller, 404 with a path
  parameter, 413 with a body, 429 when rate limits apply.
- The OpenAI-compatible surface (``/v1/``, plain async views drf-spectacular cannot see) is
  merged in from ``chat.openai.schema``, in OpenAI's own error shape.
"""

from __future__ import annotations

import functools
import re
from http import HTTPStatus
from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

ERROR_COMPONENT = "Error"
BEARER = "apiKey"
SESSION = "session"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every 4xx and 5xx of the Cadence API has this shape.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Stable, machine-readable: `invalid`, `not_found`, …",
                },
                "message": {"type": "string", "description": "For people."},
                "details": {
                    "description": "What was wrong and where: field errors, limits, the field "
                    "a domain error is about."
                },
            },
            "required": ["code", "message", "details"],
            "additionalProperties": False,
        }
    },
    "required": ["error"],
    "additionalProperties": False,
}

# What each status means when the operation itself declares nothing more precise.
ERROR_DESCRIPTIONS = {
    "400": "The request is invalid: `details` names the fields and what is wrong with them.",
    "401": "No credentials, or an API key that is unknown, revoked or expired.",
    "403": "Authenticated, but not allowed: a lower role, a suspended organization, or a "
    "session request without its CSRF token.",
    "404": "Not found. An organization the caller does not belong to is also a 404.",
    "409": "In conflict with the current state: the orchestrator is not ready, or a reply is "
    "still being written.",
    "413": "The request body exceeds `CADENCE_MAX_BODY_BYTES` (declared or chunked).",
    "429": "A rate limit of the organization's plan; `Retry-After` says when to try again.",
    "502": "The orchestrator's model failed; `code` says how.",
    "504": "The orchestrator's model did not answer in time.",
}


@functools.cache
def results_of(item: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """The `{"results": [item, …]}` envelope of a list endpoint, one class per item type."""
    name = re.sub(r"Output$", "", item.__name__) + "List"
    return type(
        name,
        (serializers.Serializer,),
        {"results": item(many=True), "__module__": item.__module__, "__qualname__": name},
    )


class CadenceAutoSchema(AutoSchema):
    def get_description(self) -> str:
        # extend_schema(description=…) overrides this in the subclass it creates; nothing else is
        # shown, so a maintainer's docstring never becomes API documentation.
        return ""

    def get_tags(self) -> list[str]:
        # /api/v1/orgs/{org_slug}/members/… is about members, not about "orgs".
        tokens = self._tokenize_path()
        if tokens[:1] == ["orgs"] and len(tokens) > 1:
            return [tokens[1]]
        return tokens[:1] or ["api"]

    def get_operation_id(self) -> str:
        # Plain APIViews: a GET on a collection (a *ListApi view, by convention) is a list, so
        # /orgs/ and /orgs/{slug}/ do not both become "orgs_retrieve".
        operation_id = super().get_operation_id()
        if self.method == "GET" and "List" in type(self.view).__name__:
            return re.sub(r"_retrieve$", "_list", operation_id)
        return operation_id

    def get_serializer_name(self, serializer, direction) -> str:
        cls = serializer.__class__
        parts = cls.__qualname__.split(".")
        if len(parts) < 2 or "<locals>" in parts:
            return cls.__name__
        owner = re.sub(r"(Api|View|Serializer)$", "", parts[-2])
        return owner + re.sub(r"Serializer$", "", parts[-1])


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.ApiKeyAuthentication"
    name = BEARER

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "ck_…",
            "description": "An organization's API key: `Authorization: Bearer ck_…`. It acts "
            "with its own role, in its own organization only.",
        }


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.CsrfSessionAuthentication"
    name = SESSION

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.SESSION_COOKIE_NAME,
            "description": "A signed-in browser session. POST, PATCH and DELETE also need the "
            f"`{settings.CSRF_HEADER_NAME.removeprefix('HTTP_').replace('_', '-')}` header "
            f"with the `{settings.CSRF_COOKIE_NAME}` cookie's value.",
        }


def _error_response(status: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": ERROR_DESCRIPTIONS[status],
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}
        },
    }
    if status == "429":
        response["headers"] = {
            "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}
        }
    return response


def _statuses_for(path: str, operation: dict[str, Any]) -> list[str]:
    statuses = []
    has_body = "requestBody" in operation
    has_query = any(p.get("in") == "query" for p in operation.get("parameters", []))
    needs_caller = {} not in operation.get("security", [{}])
    if has_body or has_query:
        statuses.append("400")
    if needs_caller:
        statuses += ["401", "403"]
    if "{" in path or has_body:  # a body can name what is not there (an invitation's token)
        statuses.append("404")
    if has_body:
        statuses.append("413")
    if needs_caller:
        statuses.append("429")
    return statuses


def postprocess(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """Error responses on every operation, the Error component, and the /v1 surface."""
    from chat.openai.schema import openai_components, openai_paths

    components = result.setdefault("components", {})
    components.setdefault("schemas", {})[ERROR_COMPONENT] = ERROR_SCHEMA
    for path, item in result.get("paths", {}).items():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            for status in _statuses_for(path, operation):
                responses.setdefault(status, _error_response(status))
            for status, response in responses.items():
                if not response.get("description"):
                    response["description"] = HTTPStatus(int(status)).phrase
                # An error an operation declares without a body (`502: None`) has the one shape.
                if status[0] in "45" and "content" not in response and status in ERROR_DESCRIPTIONS:
                    responses[status] = _error_response(status)
    for name, schema in openai_components().items():
        if name in components["schemas"]:
            raise ValueError(f"OpenAPI component {name!r} is declared twice")
        components["schemas"][name] = schema
    result["paths"] = {**result.get("paths", {}), **openai_paths()}
    return result
