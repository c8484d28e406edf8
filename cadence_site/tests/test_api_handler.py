"""/v1/ runs on its own ASGI handler with async-only middleware (cadence_site/handlers.py)."""

from __future__ import annotations

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.exceptions import ImproperlyConfigured

from cadence_site.handlers import ApiASGIHandler


async def _get(
    path: str, headers: list[tuple[bytes, bytes]] = (), *, ended: bool = False
) -> tuple[int, dict, bytes]:
    """`ended`: returns once the application has returned too (the response closed)."""
    from cadence_site.asgi import application

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(5)
    body = b""
    while True:
        message = await communicator.receive_output(5)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if ended:
        await communicator.wait(5)
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body


@pytest.mark.asyncio
async def test_v1_answers_through_the_api_handler_with_its_headers(committed_db):
    status, headers, body = await _get("/v1/models", [(b"x-request-id", b"trace-1")])

    assert status == 401
    assert b'"invalid_api_key"' in body
    assert headers["x-request-id"] == "trace-1"
    assert headers["x-content-type-options"] == "nosniff"
    # The page stack's middleware did not run: no session or CSRF cookie, no frame header.
    assert "set-cookie" not in headers
    assert "x-frame-options" not in headers


@pytest.mark.asyncio
async def test_pages_still_go_through_the_full_stack(committed_db):
    status, headers, _ = await _get("/healthz")

    assert status == 200
    assert headers["x-frame-options"] == "DENY"
    assert "x-request-id" in headers


def test_a_sync_only_middleware_is_refused_at_startup():
    class Strict(ApiASGIHandler):
        middleware = ("django.middleware.clickjacking.XFrameOptionsMiddleware",)

    # MiddlewareMixin is async-capable; a plain sync callable is not.
    class SyncOnly(ApiASGIHandler):
        middleware = ("cadence_site.tests.test_api_handler.sync_only_middleware",)

    Strict()
    with pytest.raises(ImproperlyConfigured, match="async-capable"):
        SyncOnly()


def sync_only_middleware(get_response):
    def middleware(request):
        return get_response(request)

    return middleware


def test_request_threads_are_kept_for_the_next_request():
    import threading

    from cadence_site.handlers import RequestThreads

    threads = RequestThreads(keep=1)
    first = threads.take()
    ident = first.submit(threading.get_ident).result()
    threads.give(first)

    again = threads.take()
    assert again is first
    assert again.submit(threading.get_ident).result() == ident  # the same thread, not a new one
    assert threads.take() is not first  # one executor is one request's at a time
    threads.give(again)


def test_a_request_thread_still_running_a_call_is_kept_only_once_it_is_done():
    import threading

    from cadence_site.handlers import RequestThreads

    threads = RequestThreads()
    executor = threads.take()
    release = threading.Event()
    running = executor.submit(release.wait, 5)  # a call a cancelled request left running
    threads.give(executor)

    assert executor not in threads.idle
    assert threads.take() is not executor
    release.set()
    running.result(5)
    executor.submit(lambda: None).result(5)  # after the marker call queued behind it
    assert executor in threads.idle


def test_kept_request_threads_are_capped():
    from cadence_site.handlers import RequestThreads

    threads = RequestThreads(keep=2)
    executors = [threads.take() for _ in range(3)]
    for executor in executors:
        executor.submit(lambda: None).result(5)
        threads.give(executor)

    assert len(threads.idle) == 2
    assert executors[2]._shutdown  # the third was let go


@pytest.mark.asyncio
async def test_consecutive_requests_run_their_sync_work_on_one_kept_thread(committed_db):
    import asyncio
    import threading

    from django.core import signals

    from cadence_site.handlers import _request_threads

    idents = []

    def receiver(**kwargs):
        idents.append(threading.get_ident())

    def kept(ident: int) -> bool:
        return any(
            thread.ident == ident
            for executor in list(_request_threads.idle)
            for thread in list(executor._threads)
        )

    signals.request_started.connect(receiver)
    try:
        for _ in range(3):
            assert (await _get("/healthz"))[0] == 200
            # Given back as the request ends, or, if its thread has not yet marked itself idle
            # (a loaded machine), once a no-op queued behind its last call has run
            # (RequestThreads.give): the next request must come after that to find it.
            deadline = asyncio.get_running_loop().time() + 5
            while not kept(idents[-1]):
                assert asyncio.get_running_loop().time() < deadline, "the thread was not kept"
                await asyncio.sleep(0.01)
    finally:
        signals.request_started.disconnect(receiver)

    assert len(idents) == 3
    assert len(set(idents)) == 1, "each request started a thread of its own"


@pytest.mark.asyncio
async def test_v1_sends_the_request_signals_without_a_thread_hop(committed_db, monkeypatch):
    """Django's own request_started/request_finished receivers run on the loop for /v1 (they
    have nothing to close there): no hop to the request's thread, as Django's handler made
    twice per request. Any other receiver gets Django's behaviour, on the request's thread."""
    import threading

    from django.core import signals

    from cadence_site import handlers

    hops = []
    real = handlers.sync_to_async

    def counted(fn, *args, **kwargs):
        hops.append(fn)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(handlers, "sync_to_async", counted)

    async def refused(*args, **kwargs):
        raise AssertionError("request_started went through Signal.asend")

    monkeypatch.setattr(signals.request_started, "asend", refused)
    status, _, _ = await _get("/v1/models", ended=True)
    assert (status, hops) == (401, [])
    monkeypatch.undo()

    threads = []

    def probe(**kwargs):
        threads.append(threading.current_thread())

    signals.request_finished.connect(probe)
    try:
        status, _, _ = await _get("/v1/models", ended=True)
    finally:
        signals.request_finished.disconnect(probe)
    assert status == 401
    assert len(threads) == 1 and threads[0] is not threading.main_thread()
