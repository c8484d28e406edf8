"""The one outbound client: egress policy, redirects, body caps (against a local server)."""

from __future__ import annotations

import logging
import socket

import httpx
import pytest

from cadence_site import outbound
from cadence_site.outbound import EgressDenied, acheck_url, async_client, check_url, fetch


@pytest.fixture
def strict_egress(settings):
    settings.CADENCE_EGRESS_ALLOW_PRIVATE = False
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = []
    settings.CADENCE_EGRESS_ALLOWED_NETWORKS = []
    return settings


def _resolves_to(monkeypatch, *addresses: str) -> None:
    def fake_getaddrinfo(host, port, *args, **kwargs):
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.1.2.3:8080/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8000/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "http://[fd00::1]/",
        # Spellings of 127.0.0.1 the resolver accepts: decimal, hex, octal, short.
        "http://2130706433/",
        "http://0x7f000001/",
        "http://017700000001/",
        "http://127.1/",
    ],
)
def test_check_url_refuses_non_public_addresses(strict_egress, url):
    # Given a strict policy, when a URL names a non-public address, then it is refused.
    with pytest.raises(EgressDenied) as info:
        check_url(url)

    assert info.value.code == "egress_denied"
    assert info.value.status_code == 400
    assert "private or reserved address" in info.value.message


def test_check_url_refuses_a_name_resolving_to_loopback(strict_egress):
    with pytest.raises(EgressDenied) as info:
        check_url("http://localhost:8000/admin")

    assert info.value.extra["host"] == "localhost"
    assert info.value.extra["reason"] == "not_public"


def test_check_url_refuses_when_any_address_is_private(strict_egress, monkeypatch):
    # Given a name with one public and one private address (a rebinding trick)
    _resolves_to(monkeypatch, "93.184.216.34", "10.0.0.5")

    with pytest.raises(EgressDenied):
        check_url("https://mixed.example/")


@pytest.mark.parametrize(
    ("url", "scheme"),
    [("file:///etc/passwd", "file"), ("ftp://example.com/x", "ftp"), ("gopher://x/", "gopher")],
)
def test_check_url_refuses_other_schemes(strict_egress, url, scheme):
    with pytest.raises(EgressDenied) as info:
        check_url(url)

    assert info.value.message == f"Only http and https URLs are allowed, not {scheme}."


def test_check_url_allows_public_addresses(strict_egress, monkeypatch):
    _resolves_to(monkeypatch, "93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")

    assert check_url("https://api.example.com/v1?key=secret") is None
    assert check_url("http://8.8.8.8/") is None


def test_check_url_allows_private_addresses_when_configured(strict_egress):
    strict_egress.CADENCE_EGRESS_ALLOW_PRIVATE = True

    assert check_url("http://127.0.0.1:11434/v1") is None
    assert check_url("http://localhost/") is None


def test_check_url_allows_listed_hosts_only(strict_egress):
    # Given only "localhost" and the subdomains of internal.test allowed
    strict_egress.CADENCE_EGRESS_ALLOWED_HOSTS = ["localhost", ".internal.test"]

    check_url("http://localhost:8000/")
    check_url("http://ollama.internal.test/")
    check_url("http://internal.test/")
    with pytest.raises(EgressDenied):
        check_url("http://127.0.0.1/")


def test_check_url_reports_a_host_that_does_not_resolve(strict_egress, monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror("no such host")

    monkeypatch.setattr(socket, "getaddrinfo", fail)

    with pytest.raises(EgressDenied) as info:
        check_url("https://nowhere.invalid/")

    assert info.value.message == "The host nowhere.invalid does not resolve."


async def test_acheck_url_applies_the_same_policy(strict_egress):
    with pytest.raises(EgressDenied):
        await acheck_url("http://localhost/")
    strict_egress.CADENCE_EGRESS_ALLOWED_HOSTS = ["localhost"]
    await acheck_url("http://localhost/")


async def test_client_refuses_before_connecting(strict_egress, openai_server):
    # Given the server's host allowed by IP only, when the client is asked for "localhost"
    url = openai_server.base_url.replace("127.0.0.1", "localhost") + "/models"
    async with async_client(timeout=2) as client:
        with pytest.raises(EgressDenied):
            await client.get(url)

    # then the server never saw a request
    assert openai_server.requests == []


async def test_connect_time_guard_refuses_a_rebound_name(strict_egress, monkeypatch):
    # Given a name that resolved to a public address at check time and a private one at connect
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    def rebinding(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in next(answers)]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    async with async_client(timeout=2) as client:
        with pytest.raises(EgressDenied):
            await client.get("http://rebind.example/")


async def test_client_has_explicit_timeouts_and_no_redirects(settings):
    settings.CADENCE_OUTBOUND_TIMEOUT = 7.0
    async with async_client() as client:
        assert client.timeout == httpx.Timeout(connect=7.0, read=7.0, write=7.0, pool=7.0)
        assert client.follow_redirects is False
    async with async_client(timeout=30) as client:
        assert client.timeout == httpx.Timeout(connect=10.0, read=30.0, write=30.0, pool=30.0)


async def test_fetch_returns_status_headers_and_text(openai_server):
    status, headers, text = await fetch(openai_server.base_url + "/models")

    assert status == 200
    assert headers["content-type"] == "application/json"
    assert text == (
        '{"object": "list", "data": [{"id": "gpt-test", "object": "model", '
        '"created": 1700000000, "owned_by": "fake"}]}'
    )


async def test_fetch_caps_the_body(openai_server):
    status, _, text = await fetch(openai_server.base_url + "/models", max_bytes=10)

    assert (status, text) == (200, '{"object":')


async def test_fetch_refuses_private_addresses(strict_egress):
    with pytest.raises(EgressDenied):
        await fetch("http://169.254.169.254/latest/meta-data/")


def test_httpx_log_lines_drop_the_query_string():
    # Given a log record as httpx writes it for every request
    record = logging.LogRecord(
        "httpx",
        logging.INFO,
        __file__,
        1,
        'HTTP Request: %s %s "%s %d %s"',
        ("GET", httpx.URL("https://api.example.com/v1/x?api_key=secret"), "HTTP/1.1", 200, "OK"),
        None,
    )

    outbound._RedactQuery().filter(record)

    assert record.getMessage() == 'HTTP Request: GET https://api.example.com/v1/x "HTTP/1.1 200 OK"'


async def test_client_connects_to_the_checked_address_trying_each_in_turn(
    strict_egress, openai_server, monkeypatch
):
    # Given a name (unknown to any real resolver) whose checked addresses are 127.0.0.2, where
    # nothing listens, then 127.0.0.1, where the server does; both counted public for this test
    strict_egress.CADENCE_EGRESS_ALLOWED_HOSTS = []
    _resolves_to(monkeypatch, "127.0.0.2", "127.0.0.1")
    monkeypatch.setattr(outbound, "is_public_address", lambda address: True)

    # when the client fetches a URL on that name
    async with async_client(timeout=2) as client:
        response = await client.get(f"http://multi.example:{openai_server.port}/v1/models")

    # then the connection went to the second checked address, with the name as the Host header
    assert response.status_code == 200
    assert openai_server.last_request.headers["host"] == f"multi.example:{openai_server.port}"


# --- operator allow-lists: networks -----------------------------------------------------------


def test_allowed_networks_admit_their_addresses_whatever_the_name(strict_egress):
    # Given the loopback networks allowed, as `make run` does
    strict_egress.CADENCE_EGRESS_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]

    check_url("http://127.0.0.1:11434/v1")
    check_url("http://localhost:8080/v1")
    check_url("http://[::1]:8000/")
    check_url("http://[::ffff:127.0.0.1]/")
    # and nothing else that is private
    for url in ("http://10.0.0.5/", "http://169.254.169.254/", "http://192.168.1.1/"):
        with pytest.raises(EgressDenied):
            check_url(url)


def test_allowed_networks_apply_to_resolved_names(strict_egress, monkeypatch):
    strict_egress.CADENCE_EGRESS_ALLOWED_NETWORKS = ["10.1.0.0/16"]

    _resolves_to(monkeypatch, "10.1.2.3")
    check_url("http://vllm.lan/v1")
    _resolves_to(monkeypatch, "10.1.2.3", "10.2.0.1")
    with pytest.raises(EgressDenied):
        check_url("http://vllm.lan/v1")


def test_a_malformed_network_entry_opens_nothing(strict_egress, caplog):
    strict_egress.CADENCE_EGRESS_ALLOWED_NETWORKS = ["not-a-network", "127.0.0.0/33"]

    with (
        pytest.raises(EgressDenied),
        caplog.at_level(logging.ERROR, logger="cadence_site.outbound"),
    ):
        check_url("http://127.0.0.1/")

    assert "'not-a-network' is not a network" in caplog.text


def test_the_refusal_names_the_settings_that_allow_it(strict_egress):
    with pytest.raises(EgressDenied) as info:
        check_url("http://127.0.0.1:11434/v1")

    assert "CADENCE_EGRESS_ALLOWED_HOSTS" in info.value.message
    assert "CADENCE_EGRESS_ALLOWED_NETWORKS" in info.value.message
    assert info.value.extra == {
        "host": "127.0.0.1",
        "reason": "not_public",
        "settings": [
            "CADENCE_EGRESS_ALLOWED_HOSTS",
            "CADENCE_EGRESS_ALLOWED_NETWORKS",
            "CADENCE_EGRESS_ALLOW_PRIVATE",
        ],
    }


async def test_the_connect_time_guard_honours_allowed_networks(
    strict_egress, _openai_server_process
):
    # A real local server reached only because its network is allowed (no host entry).
    url = f"{_openai_server_process.base_url}/models"
    strict_egress.CADENCE_EGRESS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    async with async_client(timeout=5) as client:
        assert (await client.get(url)).status_code == 200

    strict_egress.CADENCE_EGRESS_ALLOWED_NETWORKS = []
    async with async_client(timeout=5) as client:
        with pytest.raises(EgressDenied):
            await client.get(url)
