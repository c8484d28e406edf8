"""The ASGI handler for /v1/, the OpenAI-compatible surface.

Its views are async and authenticate by API key themselves (chat/openai/access.py); the page
middleware (sessions, CSRF, auth, messages, tenant resolution from the path) has nothing to do for
them, yet under ASGI each sync middleware is a hop to the one thread-sensitive thread, per request
and per phase, shared by every request the process serves. This handler runs the same views with
only async-capable middleware: request ids and logs, CORS, the body size limit, and the security
headers an API response needs.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import (
    ThreadSensitiveContext,
    iscoroutinefunction,
    markcoroutinefunction,
    sync_to_async,
)
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpResponsePermanentRedirect
from django.utils.module_loading import import_string

API_PREFIX = "/v1/"


class ApiSecurityMiddleware:
    """What SecurityMiddleware does for an API response, async: HTTPS redirect and headers."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request):
        if settings.SECURE_SSL_REDIRECT and not request.is_secure():
            host = settings.SECURE_SSL_HOST or request.get_host()
            return HttpResponsePermanentRedirect(f"https://{host}{request.get_full_path()}")
        response = await self.get_response(request)
        if settings.SECURE_CONTENT_TYPE_NOSNIFF:
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if settings.SECURE_HSTS_SECONDS and request.is_secure():
            value = f"max-age={settings.SECURE_HSTS_SECONDS}"
            if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
                value += "; includeSubDomains"
            if settings.SECURE_HSTS_PRELOAD:
                value += "; preload"
            response.headers.setdefault("Strict-Transport-Security", value)
        if settings.SECURE_REFERRER_POLICY:
            response.headers.setdefault("Referrer-Policy", settings.SECURE_REFERRER_POLICY)
        return response


class RequestThreads:
    """Single-thread executors for requests' thread-sensitive work, kept for the next request.

    Django enters a ThreadSensitiveContext per request, and asgiref gives each such context a
    ThreadPoolExecutor of its own: a thread started for the request's first thread-sensitive
    call (the request_started and request_finished signals' synchronous receivers, sync
    middleware and views) and another started at its end to join the first. Two thread starts
    per request were ~10% of the server's CPU on an API request (py-spy, /v1/models). Here a
    request takes an idle executor (one thread, still one request at a time on it, as asgiref
    requires of a context's executor) and gives it back when the request ends and the thread
    has run everything it was given (a call a cancelled request left running finishes first)."""

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self.idle: deque[ThreadPoolExecutor] = deque()
        self.lock = threading.Lock()

    def take(self) -> ThreadPoolExecutor:
        try:
            return self.idle.pop()
        except IndexError:
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="cadence-request")

    def give(self, executor: ThreadPoolExecutor) -> None:
        if executor._work_queue.empty() and not self._busy(executor):
            self._keep(executor)
            return
        # Still running something: back once that is done (the no-op runs after it).
        executor.submit(_nothing).add_done_callback(lambda _: self._keep(executor))

    @staticmethod
    def _busy(executor: ThreadPoolExecutor) -> bool:
        # An idle worker holds a permit; a worker without one is running a call.
        return executor._idle_semaphore._value == 0 and bool(executor._threads)

    def _keep(self, executor: ThreadPoolExecutor) -> None:
        with self.lock:
            if len(self.idle) < self.keep:
                self.idle.append(executor)
                return
        executor.shutdown(wait=False)


def _nothing() -> None:
    """A marker call: the executor is free once it has run."""


_request_threads = RequestThreads()


class RecycledThreadsMixin:
    """Django's ASGIHandler.__call__ with a request thread taken from RequestThreads."""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = _request_threads.take()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            _request_threads.give(executor)


class ApiASGIHandler(RecycledThreadsMixin, ASGIHandler):
    middleware = (
        "cadence_site.requestlog.RequestContextMiddleware",
        "corsheaders.middleware.CorsMiddleware",
        "cadence_site.errors.BodySizeLimitMiddleware",
        "cadence_site.inputguard.RequestCharactersMiddleware",
        "cadence_site.handlers.ApiSecurityMiddleware",
    )

    def load_middleware(self, is_async: bool = False) -> None:
        if not is_async:
            raise ImproperlyConfigured("ApiASGIHandler serves ASGI only.")
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = convert_exception_to_response(self._get_response_async)
        for path in reversed(self.middleware):
            instance = import_string(path)(handler)
            if not iscoroutinefunction(instance):
                raise ImproperlyConfigured(f"{path} must be async-capable to serve {API_PREFIX}.")
            handler = convert_exception_to_response(instance)
        self._middleware_chain = handler


class PagesASGIHandler(RecycledThreadsMixin, ASGIHandler):
    """Django's full stack for everything but /v1/, its middleware and view run synchronously in
    one hop to the thread-sensitive thread.

    The page middleware (security, whitenoise, sessions, common, CSRF, auth, messages,
    clickjacking, tenant resolution) is synchronous: under ASGI Django adapts each one on its
    own, a hop to that thread and back per middleware and phase (a dozen and more per request,
    each queued behind every other request's). Run as one synchronous chain, as under WSGI, a
    request makes one hop; the response (streamed ones included) is sent from the loop as
    before."""

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


def http_router(pages, api):
    """/v1/ to the API handler, everything else to Django's full stack; chunked bodies read whole
    (within the body limit) for both (cadence_site/bodies.py)."""
    from cadence_site.bodies import read_chunked_bodies

    async def route(scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(API_PREFIX):
            return await api(scope, receive, send)
        return await pages(scope, receive, send)

    return read_chunked_bodies(route)
