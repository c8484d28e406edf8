"""The one outbound HTTP client: timeouts on every call, no redirects, private addresses refused.

Every URL Cadence fetches on someone's behalf (LLM endpoints, HTTP tools, webhooks) can be typed
by an organization, so each request is an SSRF door. The policy, in one place:

- only ``http`` and ``https``;
- the host must resolve only to public addresses: private, loopback, link-local (cloud metadata
  lives at 169.254.169.254), multicast, reserved and unspecified addresses are refused, also when
  written as IPv4-mapped IPv6 (``::ffff:127.0.0.1``);
- unless the operator allows it: ``CADENCE_EGRESS_ALLOWED_HOSTS`` lists host names (an entry
  starting with ``.`` allows every subdomain) whose addresses are not checked,
  ``CADENCE_EGRESS_ALLOWED_NETWORKS`` lists networks (CIDR, ``127.0.0.0/8``, ``10.1.0.0/16``)
  whose addresses are allowed whatever name led to them, and ``CADENCE_EGRESS_ALLOW_PRIVATE``
  allows every address. ``make run`` allows the loopback networks unless the variable is set, so
  a model server on the developer's machine (Ollama, vLLM, llama.cpp) works out of the box.
  Settings are read at call time so tests can override them.

A host that does not resolve is refused with ``details.reason = "unresolvable"``: a configuration
saved on an offline machine keeps it (with a warning) and is checked again at every call. A
refused address's message names the settings that would allow it, never the address itself.

Two layers enforce it. A request event hook checks every request the client sends, before any
connection is opened (so a redirect followed by a caller is checked too). Then the transport's
network backend resolves the host again at connect time, refuses a private answer, and connects
to the address it checked: a DNS answer that changes between the check and the connection (DNS
rebinding) therefore cannot reach an internal address. TLS still verifies the certificate against
the host name, which httpcore passes separately as the SNI name.

Environment proxies are ignored (``trust_env=False``): through a proxy the guard would only see
the proxy's address, not the destination's.

Nothing here logs a URL's query string or any header: both may carry API keys.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
from django.conf import settings

from cadence_site.errors import ApplicationError

logger = logging.getLogger(__name__)


class _RedactQuery(logging.Filter):
    """httpx logs every request's full URL at INFO; keep the path, drop the query (keys live there)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                a.copy_with(query=None, fragment=None)
                if isinstance(a, httpx.URL) and (a.query or a.fragment)
                else a
                for a in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_RedactQuery())

ALLOWED_SCHEMES = ("http", "https")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressDenied(ApplicationError):
    """An outbound request the egress policy refuses."""

    def __init__(self, message: str, extra: dict[str, Any] | None = None):
        super().__init__(message, "egress_denied", extra, status=400)


# --- the policy ---------------------------------------------------------------------------------


UNRESOLVABLE = "unresolvable"
NOT_PUBLIC = "not_public"
# What the refusal of a non-public address tells the operator to change.
ALLOW_SETTINGS = (
    "CADENCE_EGRESS_ALLOWED_HOSTS",
    "CADENCE_EGRESS_ALLOWED_NETWORKS",
    "CADENCE_EGRESS_ALLOW_PRIVATE",
)


def _private_allowed() -> bool:
    return bool(getattr(settings, "CADENCE_EGRESS_ALLOW_PRIVATE", False))


@functools.lru_cache(maxsize=16)
def _parse_networks(
    entries: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            # A typo must not open anything: the entry is ignored, loudly.
            logger.error("CADENCE_EGRESS_ALLOWED_NETWORKS: %r is not a network; ignored", entry)
    return tuple(networks)


def allowed_networks() -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    entries = getattr(settings, "CADENCE_EGRESS_ALLOWED_NETWORKS", None) or ()
    if isinstance(entries, str):
        entries = entries.split(",")
    return _parse_networks(tuple(entries))


def address_allowed(address: IPAddress | str) -> bool:
    """Whether ``address`` is public or inside one of CADENCE_EGRESS_ALLOWED_NETWORKS."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if is_public_address(ip):
        return True
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    return any(
        candidate.version == network.version and candidate in network
        for network in allowed_networks()
        for candidate in candidates
    )


def host_allowed(host: str) -> bool:
    """Whether ``host`` is listed in CADENCE_EGRESS_ALLOWED_HOSTS (``.example.com`` = subdomains)."""
    host = host.lower().rstrip(".").strip("[]")
    for entry in getattr(settings, "CADENCE_EGRESS_ALLOWED_HOSTS", None) or ():
        entry = entry.lower().strip().rstrip(".").strip("[]")
        if not entry:
            continue
        if entry.startswith("."):
            if host == entry[1:] or host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


def is_public_address(address: IPAddress | str) -> bool:
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        # ::ffff:10.0.0.1 reaches 10.0.0.1; judge the IPv4 address it wraps.
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            ip = mapped
    # is_global also catches shared (100.64/10) and documentation ranges that is_private misses.
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _split(url: str | httpx.URL) -> tuple[str, str, int | None]:
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(str(url))
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise EgressDenied("The URL is not valid.") from exc
    return parsed.scheme.lower(), (parsed.host or "").lower(), parsed.port


def _check_scheme_and_host(scheme: str, host: str) -> bool:
    """Validate the parts that need no DNS; True when the host needs no address check."""
    if scheme not in ALLOWED_SCHEMES:
        raise EgressDenied(
            f"Only http and https URLs are allowed, not {scheme or 'a URL without a scheme'}.",
            {"scheme": scheme},
        )
    if not host:
        raise EgressDenied("The URL has no host.")
    return _private_allowed() or host_allowed(host)


def _unresolvable(host: str) -> EgressDenied:
    return EgressDenied(
        f"The host {host} does not resolve.", {"host": host, "reason": UNRESOLVABLE}
    )


def _refuse_private(host: str, addresses: Iterable[str]) -> list[str]:
    checked = list(dict.fromkeys(addresses))
    if not checked:
        raise _unresolvable(host)
    for address in checked:
        if not address_allowed(address.split("%", 1)[0]):
            # The host only, never the URL: its query string may carry a key.
            logger.warning("egress refused: %s resolves to a non-public address", host)
            raise EgressDenied(
                f"The host {host} resolves to a private or reserved address, which is not "
                f"allowed. An operator can allow it with CADENCE_EGRESS_ALLOWED_HOSTS (this "
                f"host) or CADENCE_EGRESS_ALLOWED_NETWORKS (its network).",
                {"host": host, "reason": NOT_PUBLIC, "settings": list(ALLOW_SETTINGS)},
            )
    return checked


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[str]:
    return [str(info[4][0]) for info in infos]


def check_url(url: str | httpx.URL) -> None:
    """Raise EgressDenied unless the policy lets Cadence send a request to ``url``.

    Resolves the host with a blocking ``getaddrinfo``: from async code use ``acheck_url``.
    """
    scheme, host, port = _split(url)
    if _check_scheme_and_host(scheme, host):
        return
    literal = _literal_address(host)
    if literal is not None:
        _refuse_private(host, [str(literal)])
        return
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise _unresolvable(host) from exc
    _refuse_private(host, _addresses(infos))


async def acheck_url(url: str | httpx.URL) -> None:
    """``check_url`` without blocking the event loop (the loop resolves on its executor)."""
    scheme, host, port = _split(url)
    if _check_scheme_and_host(scheme, host):
        return
    literal = _literal_address(host)
    if literal is not None:
        _refuse_private(host, [str(literal)])
        return
    await _resolve_public(host, port or 443)


async def _resolve_public(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise _unresolvable(host) from exc
    return _refuse_private(host, _addresses(infos))


# --- the client ---------------------------------------------------------------------------------


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks and connects to the checked address: closes the DNS-rebinding window."""

    def __init__(
        self,
        inner: httpcore.AsyncNetworkBackend,
        connect_errors: tuple[type[Exception], ...] = (httpcore.ConnectError,),
    ):
        self._inner = inner
        self._connect_errors = connect_errors

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        targets = [host]
        if not (_private_allowed() or host_allowed(host)):
            literal = _literal_address(host)
            if literal is not None:
                _refuse_private(host, [str(literal)])
            else:
                targets = await _resolve_public(host, port)
        # Every checked address in turn, as the resolver would: one unreachable family (an IPv6
        # address on an IPv4-only network) must not fail the request.
        for index, target in enumerate(targets):
            try:
                return await self._inner.connect_tcp(
                    target,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except self._connect_errors:
                if index == len(targets) - 1:
                    raise
        raise AssertionError("unreachable")

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise EgressDenied("Unix sockets are not allowed.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def _check_request(request: httpx.Request) -> None:
    await acheck_url(request.url)


def _guard_transport(transport: httpx.AsyncHTTPTransport) -> httpx.AsyncHTTPTransport:
    # httpx does not expose the pool's network backend; the attribute has been stable since
    # httpx 0.18. Should it move, the event hook still checks every request (without the rebinding
    # guard), so fail open on the second layer only.
    pool = getattr(transport, "_pool", None)
    inner = getattr(pool, "_network_backend", None)
    if inner is not None:
        pool._network_backend = _GuardedBackend(inner)  # type: ignore[union-attr]
    else:  # pragma: no cover - depends on the httpx version
        logger.warning("outbound: DNS-rebinding guard unavailable with this httpx version")
    return transport


@functools.cache
def _ssl_context(flavour: str):
    """One verifying TLS context per process and client library: building one loads the CA
    bundle (measured ~0.1 s idle, far more under load), and a context is safe to share."""
    if flavour == "httpx2":
        import httpx2

        return httpx2.create_ssl_context(trust_env=False)
    return httpx.create_ssl_context(trust_env=False)


def client_timeout(seconds: float | None = None) -> httpx.Timeout:
    seconds = float(settings.CADENCE_OUTBOUND_TIMEOUT if seconds is None else seconds)
    return httpx.Timeout(connect=min(seconds, 10.0), read=seconds, write=seconds, pool=seconds)


def async_client(timeout: float | None = None, **kwargs: Any) -> httpx.AsyncClient:
    """A new AsyncClient under the egress policy; close it (``async with``) when done.

    ``timeout`` bounds each phase (connect at most 10 s, read, write, pool wait); it defaults to
    CADENCE_OUTBOUND_TIMEOUT. Redirects are not followed: a 3xx is returned to the caller, and a
    caller that follows one sends a new request, checked like any other.
    """
    hooks = kwargs.pop("event_hooks", {})
    return httpx.AsyncClient(
        timeout=client_timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        transport=_guard_transport(
            httpx.AsyncHTTPTransport(retries=0, verify=_ssl_context("httpx"))
        ),
        event_hooks={
            "request": [_check_request, *hooks.get("request", [])],
            "response": list(hooks.get("response", [])),
        },
        **kwargs,
    )


def httpx2_client(timeout: float | None = None, **kwargs: Any):
    """The same policy for the MCP SDK, which speaks `httpx2` (a fork of httpx, same API): the
    request hook checks every request (the SDK's same-origin redirects included), the guarded
    backend every connection. Close it (``async with``) when done."""
    import httpcore2
    import httpx2

    transport = httpx2.AsyncHTTPTransport(retries=0, verify=_ssl_context("httpx2"))
    pool = getattr(transport, "_pool", None)
    inner = getattr(pool, "_network_backend", None)
    if inner is not None:
        pool._network_backend = _GuardedBackend(inner, (httpcore2.ConnectError,))  # type: ignore[union-attr]
    else:  # pragma: no cover - depends on the httpx2 version
        logger.warning("outbound: DNS-rebinding guard unavailable with this httpx2 version")
    seconds = float(settings.CADENCE_OUTBOUND_TIMEOUT if timeout is None else timeout)
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(
            connect=min(seconds, 10.0), read=seconds, write=seconds, pool=seconds
        ),
        follow_redirects=False,
        trust_env=False,
        transport=transport,
        event_hooks={"request": [_check_request], "response": []},
        **kwargs,
    )


async def fetch(
    url: str,
    *,
    max_bytes: int | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - the client's per-phase timeouts
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    """GET ``url`` under the egress policy: (status, headers, text), the body cut at ``max_bytes``.

    The body is streamed and reading stops at the cap, so a huge response costs at most
    ``max_bytes`` of memory (default CADENCE_OUTBOUND_MAX_RESPONSE_BYTES). Raises EgressDenied or
    an ``httpx.HTTPError`` (timeouts, connection failures).
    """
    cap = int(settings.CADENCE_OUTBOUND_MAX_RESPONSE_BYTES if max_bytes is None else max_bytes)
    # Judge the URL as given: httpx reads "file:///x" (no host) as a relative URL "/x".
    await acheck_url(url)
    async with (
        async_client(timeout) as client,
        client.stream("GET", url, headers=headers or None) as response,
    ):
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= cap:
                del body[cap:]
                break
        encoding = response.encoding or "utf-8"
        try:
            text = body.decode(encoding, errors="replace")
        except LookupError:
            text = body.decode("utf-8", errors="replace")
        return response.status_code, dict(response.headers), text
