"""A real OpenID Connect provider (oidc_provider.py) in its own process on loopback, and helpers
to walk a browser through a sign-in: the Django test client plays the browser on Cadence's side,
httpx plays it at the provider, and Cadence itself calls the provider over real HTTP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

REDIRECT_URI = "http://testserver/orgs/alpha/sso/callback/"
DEFAULT_USER = {
    "sub": "okta-ada",
    "email": "ada@alpha-corp.test",
    "email_verified": True,
    "name": "Ada",
    "groups": ["eng-leads", "everyone"],
}


@pytest.fixture(scope="session")
def oidc_provider_url():
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("oidc_provider.py"))],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("PORT "), f"the test provider did not start: {line!r}"
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        process.terminate()
        process.wait(timeout=10)


class Provider:
    def __init__(self, url: str):
        self.url = url

    def configure(self, **changes) -> None:
        response = httpx.post(f"{self.url}/_test/config", json=changes, timeout=10)
        response.raise_for_status()

    def seen(self) -> list[dict]:
        return httpx.get(f"{self.url}/_test/seen", timeout=10).json()


@pytest.fixture
def provider(oidc_provider_url, settings) -> Provider:
    """The provider reset to its defaults, and the egress allow-list an operator would set for a
    provider on this machine (as tests of local LLM servers do)."""
    settings.CADENCE_EGRESS_ALLOW_PRIVATE = False
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = []
    settings.CADENCE_EGRESS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    found = Provider(oidc_provider_url)
    found.configure(
        client_id="cadence-test",
        client_secret="test-secret-0123456789",
        redirect_uris=[REDIRECT_URI],
        user=dict(DEFAULT_USER),
        fault=None,
        userinfo_only=False,
        userinfo_claims=[],
    )
    return found


def sign_in(client, *, next_path: str = ""):
    """Start at Cadence, let the provider approve, and come back: the callback's response."""
    start = client.get("/orgs/alpha/sso/login/" + (f"?next={next_path}" if next_path else ""))
    assert start.status_code == 302, start.content[:500]
    at_provider = httpx.get(start["Location"], follow_redirects=False, timeout=10)
    assert at_provider.status_code == 302, at_provider.text[:500]
    back = urlsplit(at_provider.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT_URI
    return client.get(f"{back.path}?{back.query}")


def callback_url(client) -> str:
    """A callback URL the provider issued, not yet used."""
    start = client.get("/orgs/alpha/sso/login/")
    at_provider = httpx.get(start["Location"], follow_redirects=False, timeout=10)
    back = urlsplit(at_provider.headers["location"])
    return f"{back.path}?{back.query}"
