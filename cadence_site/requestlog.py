"""Request context for structured logs: request id, organization and principal on every line.

Context variables (not thread locals) so that async code and the sync threads Django hands
requests to both see the values of the request they serve.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
org_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("org", default=None)
principal_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "principal", default=None
)

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContextMiddleware:
    """Assigns the request id (a sane client X-Request-ID is kept) and echoes it back.

    Sync and async: under ASGI a sync-only middleware costs a thread hop per request."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _begin(self, request) -> tuple:
        incoming = request.headers.get("X-Request-ID", "")
        request.request_id = incoming if _REQUEST_ID_OK.match(incoming) else uuid.uuid4().hex
        return (request_id_var.set(request.request_id), org_var.set(None), principal_var.set(None))

    @staticmethod
    def _end(request, tokens: tuple) -> None:
        # Django logs a 4xx/5xx ("Not Found: /x", django.request) after every middleware has
        # returned; the values stay on the request for ContextFilter to find there.
        request.log_context = (request_id_var.get(), org_var.get(), principal_var.get())
        request_id_var.reset(tokens[0])
        org_var.reset(tokens[1])
        principal_var.reset(tokens[2])

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        tokens = self._begin(request)
        try:
            response = self.get_response(request)
        finally:
            self._end(request, tokens)
        response["X-Request-ID"] = request.request_id
        return response

    async def __acall__(self, request):
        tokens = self._begin(request)
        try:
            response = await self.get_response(request)
        finally:
            self._end(request, tokens)
        response["X-Request-ID"] = request.request_id
        return response


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.org = org_var.get()
        record.principal = principal_var.get()
        if record.request_id is None:
            # A line about a request logged once its middleware returned (django.request).
            request = getattr(record, "request", None)
            saved = getattr(request, "log_context", None)
            if saved is not None:
                record.request_id, record.org, record.principal = saved
                if record.org is None:  # the tenant middleware resets its own value on the way out
                    record.org = getattr(getattr(request, "org", None), "slug", None)
        return True


# API keys, bearer tokens, LLM keys and password fields: masked whatever logger emits them.
_SECRET_PATTERNS = [
    (re.compile(r"\bck_[A-Za-z0-9_-]{6,}"), "ck_[redacted]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"), "sk-[redacted]"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"), r"\1[redacted]"),
    (
        re.compile(
            r"""(?i)(["']?(?:password|passwd|secret|api_key|token|ticket)["']?\s*[:=]\s*["']?)[^\s"'&,}]+"""
        ),
        r"\1[redacted]",
    ),
]


# Values secret in the current context whatever they look like (a run's model key, set by the
# turn pipeline): masked in every line logged meanwhile, beside the patterns above.
secrets_var: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "log_secrets", default=()
)


def redact(text: str) -> str:
    for secret in secrets_var.get():
        if secret in text:
            text = text.replace(secret, "[redacted]")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        for key, value in list(record.__dict__.items()):
            if (
                isinstance(value, str)
                and key not in ("msg", "message")
                and ("ck_" in value or "sk-" in value or "assword" in value)
            ):
                setattr(record, key, redact(value))
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are formatted later; keep their text from carrying a secret.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class NoQueryStringFilter(logging.Filter):
    """Drops the query string from the paths the ASGI server logs (its access lines and its
    WebSocket handshake lines): a `?ticket=` or any secret a client put in a URL never reaches a
    log, where it could be replayed."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and "?" in a for a in args):
            record.args = tuple(
                a.split("?", 1)[0] if isinstance(a, str) and a.startswith("/") else a for a in args
            )
        elif isinstance(record.msg, str) and "?" in record.msg and not args:
            record.msg = re.sub(r"(\s/[^\s?\"]*)\?[^\s\"]*", r"\1", record.msg)
        return True


SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error", "daphne.server", "daphne.ws_protocol")


def install_server_log_filters() -> None:
    """Attach NoQueryStringFilter to the ASGI servers' own loggers (they configure them before
    Django starts, outside settings.LOGGING)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, NoQueryStringFilter) for f in logger.filters):
            logger.addFilter(NoQueryStringFilter())
