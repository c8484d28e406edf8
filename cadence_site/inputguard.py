"""Input no layer below can store: NUL characters, lone surrogates, JSON nested past any use.

PostgreSQL text cannot hold NUL, UTF-8 cannot encode a lone surrogate (`"\\ud800"` is valid JSON),
and Python's JSON parser recurses once per nesting level, so each used to surface as a 500 deep
inside a query or the parser. Here they are refused up front, with the place named: the path, a
query parameter, or the JSON path of the field (`messages[0].content`).

`json_loads` caps size and depth before parsing: depth is measured on the brackets alone (strings
removed), with C-speed substitutions, so a body of many flat objects costs no Python loop.
"""

from __future__ import annotations

import json
import re
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from rest_framework.parsers import JSONParser

from cadence_site.errors import ApplicationError, error_response

DEFAULT_MAX_DEPTH = 64

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_EMPTY_PAIR = re.compile(r"\[\]|\{\}")
# Escapes that decode to a NUL or a surrogate; without one, no parsed string can hold either.
_RISKY_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_BAD_CHAR = re.compile(r"[\x00\ud800-\udfff]")


class InputError(ApplicationError):
    """A 400 that names where the bad input is (`details.field`)."""

    def __init__(self, message: str, code: str, field: str | None = None):
        super().__init__(message, code, {"field": field} if field else {})
        self.field = field


def max_depth() -> int:
    return getattr(settings, "CADENCE_JSON_MAX_DEPTH", DEFAULT_MAX_DEPTH)


def bad_character(text: str) -> str | None:
    """ "NUL" or "a lone surrogate" when `text` holds one, else None."""
    match = _BAD_CHAR.search(text)
    if match is None:
        return None
    return "a NUL character" if match.group() == "\x00" else "a lone surrogate"


def check_text(text: str, field: str) -> None:
    problem = bad_character(text)
    if problem is not None:
        raise InputError(
            f"{field} contains {problem}, which cannot be stored.", "invalid_characters", field
        )


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether the JSON text nests arrays/objects deeper than `limit` (malformed text: False,
    the parser reports it)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(limit):
        reduced = _EMPTY_PAIR.sub("", brackets)
        if not reduced or reduced == brackets:
            return False
        brackets = reduced
    return bool(brackets) and _EMPTY_PAIR.search(brackets) is not None


def _path(parent: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{parent}[{part}]"
    return f"{parent}.{part}" if parent else part


def find_bad_string(value: Any, where: str = "") -> tuple[str, str] | None:
    """(field path, problem) of the first string key or value holding a NUL or lone surrogate."""
    if isinstance(value, str):
        problem = bad_character(value)
        return (where or "body", problem) if problem else None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = bad_character(key)
            if problem:
                return _path(where, key.encode("utf-8", "backslashreplace").decode()), problem
            found = find_bad_string(item, _path(where, key))
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = find_bad_string(item, _path(where, index))
            if found:
                return found
    return None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def json_loads(raw: bytes | str, *, limit_bytes: int | None = None, prefix: str = "") -> Any:
    """json.loads, refusing (InputError) oversized, too deep, non-UTF-8 or malformed input and
    strings that hold a NUL or a lone surrogate. `prefix` names the input in messages."""
    if isinstance(raw, bytes):
        if limit_bytes is not None and len(raw) > limit_bytes:
            raise InputError(
                f"The {prefix or 'body'} exceeds {limit_bytes} bytes.", "payload_too_large"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"The {prefix or 'body'} is not UTF-8.", "malformed_json") from None
    else:
        text = raw
        if limit_bytes is not None and len(text) > limit_bytes:
            raise InputError(
                f"The {prefix or 'body'} exceeds {limit_bytes} characters.", "payload_too_large"
            )
    limit = max_depth()
    if json_depth_exceeds(text, limit):
        raise InputError(
            f"The JSON nests deeper than {limit} levels.", "json_too_deep", prefix or None
        )
    try:
        # NaN and Infinity are Python's extension to JSON: PostgreSQL's json refuses them.
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise InputError(
            f"The {prefix or 'body'} is not valid JSON: {exc}", "malformed_json"
        ) from None
    if _RISKY_ESCAPE.search(text):
        found = find_bad_string(value)
        if found is not None:
            field, problem = found
            raise InputError(
                f"{field} contains {problem}, which cannot be stored.", "invalid_characters", field
            )
    return value


class GuardedJSONParser(JSONParser):
    """DRF's JSON parser behind json_loads: the refusal is the API's usual 400 error shape."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        return json_loads(raw, limit_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def _openai_error(message: str, param: str | None):
    from django.http import JsonResponse

    return JsonResponse(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": "invalid_characters",
            }
        },
        status=400,
    )


class RequestCharactersMiddleware:
    """400 for a NUL or a lone surrogate in the path or a query parameter, before anything (the
    organization lookup, a URL converter) takes them to the database. Sync and async."""

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
        field = None
        if bad_character(request.path):
            field = "path"
        else:
            for name, values in request.GET.lists():
                if bad_character(name) or any(bad_character(v) for v in values):
                    field = f"query.{name.encode('utf-8', 'backslashreplace').decode()}"
                    break
        if field is None:
            return None
        message = f"{field} contains a NUL character or a lone surrogate."
        if request.path.startswith("/v1/"):
            return _openai_error(message, field)
        return error_response(400, "invalid_characters", message, {"field": field})
