"""The ASGI handler for /v1/, the OpenAI-compatible surface.

Its views are async and authenticate by API key themselves (chat/openai/access.py); the page
middleware (sessions, CSRF, auth, messages, tenant resolution from the path) has nothing to do for
them, yet under ASGI each sync middleware is a hop to the one thread-sensitive thread, per request
and per phase, shared by every request the process serves. This handler runs the same views with
only async-capable middleware: request ids and logs, CORS, the body size limit, and the security
headers an API response needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
from django.core import signals
from django.core.exceptions import ImproperlyConfigured, RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.urls import set_script_prefix
from django.utils.log import log_response
from django.utils.module_loading import import_string

from cadence_site.errors import database_unavailable, database_unavailable_response

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


@functools.cache
def _inline_receivers() -> frozenset:
    from django.core.cache import close_caches
    from django.core.handlers.base import reset_urlconf
    from django.db import close_old_connections, reset_queries

    return frozenset({close_caches, close_old_connections, reset_queries, reset_urlconf})


def _inline(signal, sender) -> list | None:
    """The receivers of `signal` for `sender` when every one of them may run on the event loop
    (Django's own request_started/request_finished receivers, which act on the calling thread's
    database connections, caches and urlconf: on the loop's thread, where /v1 never opens a
    connection, there is nothing for them to close), else None."""
    # _live_receivers: how Signal.send/asend themselves pick them (Django 5.0+).
    sync_receivers, async_receivers = signal._live_receivers(sender)
    allowed = _inline_receivers()
    if async_receivers or any(r not in allowed for r in sync_receivers):
        return None
    return sync_receivers


def _unavailable_answered(get_response):
    """convert_exception_to_response for the views, but a database out of reach is a 503
    (cadence_site/errors.py), logged as Django logs an error response. Decided here: Django
    builds an async view's error response on another thread, where handler500 no longer sees
    the exception."""

    async def inner(request):
        try:
            return await get_response(request)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            response = database_unavailable_response(request)
            log_response(
                "%s: %s",
                response.reason_phrase,
                request.path,
                response=response,
                request=request,
                exception=exc,
            )
            return response

    return convert_exception_to_response(inner)


class ApiASGIHandler(RecycledThreadsMixin, ASGIHandler):
    """Every /v1 view is async and queries only through tenants.context (pool threads that
    close connections around each call), so the request's thread-sensitive thread has nothing
    to do: Django's handler still hopped to it twice per request, for the request_started
    receivers and for response.close() (request_finished), two thread hops (each a wake-up of
    another thread and one back) of a /v1 turn's five. Here those run on the loop when every
    receiver is one of Django's own (`_inline`), as Django's handler otherwise."""

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
        handler = _unavailable_answered(self._get_response_async)
        for path in reversed(self.middleware):
            instance = import_string(path)(handler)
            if not iscoroutinefunction(instance):
                raise ImproperlyConfigured(f"{path} must be async-capable to serve {API_PREFIX}.")
            handler = convert_exception_to_response(instance)
        self._middleware_chain = handler

    async def handle(self, scope, receive, send):
        """ASGIHandler.handle (Django 5.2) but for its two hops (see the class docstring)."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        await self._send_signal(signals.request_started, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            await self._close(error_response)
            return

        async def process_request(request, send):
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client disconnected during send_response
            return response

        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    with contextlib.suppress(RequestAborted):
                        task.result()
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            await self._send_signal(signals.request_finished)
        else:
            await self._close(response)
        body_file.close()

    async def _send_signal(self, signal, **named) -> None:
        receivers = _inline(signal, self.__class__)
        if receivers is None:
            await signal.asend(sender=self.__class__, **named)
            return
        for receiver in receivers:
            receiver(signal=signal, sender=self.__class__, **named)

    async def _close(self, response) -> None:
        """response.close(): its resources' closers, then request_finished; on the loop when the
        only closer is the request's own (its body, which Django's handler closes on the loop
        too) and the receivers allow it."""
        inline = all(
            isinstance(getattr(closer, "__self__", None), HttpRequest)
            for closer in response._resource_closers
        )
        if not inline or _inline(signals.request_finished, self.__class__) is None:
            await sync_to_async(response.close)()
            return
        response.close()


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
