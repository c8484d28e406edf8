"""Rate limits on HTTP: every REST call under /api/v1/orgs/<slug>/, and login attempts.

REST calls are counted in `OrgMemberApi.initial` rather than in a Django middleware: an API key
is only authenticated inside DRF, and a call must be counted after its caller is known to belong
to the organization, or an outsider could spend a victim organization's budget with 404s.

Logins are counted per account and per client address (LoginRateLimitMiddleware), both in one
decision: an address that tries many accounts and an account tried from many addresses are both
slowed, and a refused attempt never reaches the password check.
"""

from __future__ import annotations

import hashlib
import math
import re

from django.conf import settings
from django.http import HttpResponse

from cadence_site.errors import error_response
from tenants import ratelimit
from tenants.limits import plans
from tenants.limits.enforce import RateLimited, caller_of, refusal_message, request_buckets

LOGIN_PATHS = ("/accounts/login/", "/admin/login/")
# Single sign-on: each start and callback costs requests to the organization's provider.
SSO_PATHS = re.compile(r"^(/orgs/[^/]+)?/sso/(login|callback)/$")
DEFAULT_SSO_PER_ADDRESS = 30
# Per minute. Generous for a person who mistypes, slow for a guesser: 10 per account means a
# 6-character lowercase password takes centuries, and 30 per address bounds spraying.
DEFAULT_LOGIN_PER_ACCOUNT = 10
DEFAULT_LOGIN_PER_ADDRESS = 30


def request_limit_enforce(request, *, org, scope: str | None = None) -> None:
    """Count one call by `request.user` in `org`'s buckets; RateLimited when any is full."""
    caller = caller_of(request.user)
    limits = plans.org_limits(org_id=org.id)
    key_limits = plans.key_limits(key_id=caller.key_id) if caller.key_id else None
    decision = ratelimit.decide(
        request_buckets(limits=limits, caller=caller, key_limits=key_limits, scope=scope)
    )
    request._cadence_rate = decision
    if not decision.allowed:
        raise RateLimited(decision)


def rate_headers_add(request, response):
    decision = getattr(getattr(request, "_request", request), "_cadence_rate", None)
    decision = decision or getattr(request, "_cadence_rate", None)
    if decision is not None and not decision.degraded:
        for name, value in decision.headers().items():
            response.headers.setdefault(name, value)
    return response


def client_address(request) -> str:
    """The peer's address; behind a proxy (CADENCE_BEHIND_PROXY) the one it appended."""
    if settings.SECURE_PROXY_SSL_HEADER is not None:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded.strip():
            return forwarded.split(",")[-1].strip()[:64]
    return request.META.get("REMOTE_ADDR", "")[:64] or "unknown"


def login_buckets(*, username: str, address: str) -> list[ratelimit.Bucket]:
    account = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    per_account = getattr(settings, "CADENCE_LOGIN_PER_ACCOUNT", DEFAULT_LOGIN_PER_ACCOUNT)
    per_address = getattr(settings, "CADENCE_LOGIN_PER_ADDRESS", DEFAULT_LOGIN_PER_ADDRESS)
    return [
        ratelimit.Bucket(
            ratelimit.bucket_key("login", f"account:{account}", "login"),
            per_account,
            60.0,
            None,
            "login account",
        ),
        ratelimit.Bucket(
            ratelimit.bucket_key("login", f"address:{address}", "login"),
            per_address,
            60.0,
            None,
            "login address",
        ),
    ]


def sso_bucket(*, address: str) -> ratelimit.Bucket:
    per_address = getattr(settings, "CADENCE_SSO_PER_ADDRESS", DEFAULT_SSO_PER_ADDRESS)
    return ratelimit.Bucket(
        ratelimit.bucket_key("login", f"address:{address}", "sso"),
        per_address,
        60.0,
        None,
        "single sign-on address",
    )


class LoginRateLimitMiddleware:
    """POSTs to the login pages: 429 with Retry-After before the password is checked; GETs of
    single sign-on's start and callback per address, before any request to the provider."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "POST" and request.path_info in LOGIN_PATHS:
            username = str(request.POST.get("username", ""))[:254]
            decision = ratelimit.decide(
                login_buckets(username=username, address=client_address(request))
            )
            if not decision.allowed:
                return self._refuse(request, decision)
        elif request.method == "GET" and SSO_PATHS.match(request.path_info):
            decision = ratelimit.decide([sso_bucket(address=client_address(request))])
            if not decision.allowed:
                return self._refuse(request, decision)
        return self.get_response(request)

    @staticmethod
    def _refuse(request, decision: ratelimit.Decision) -> HttpResponse:
        message = refusal_message(decision)
        if "application/json" in request.headers.get("Accept", ""):
            refusal = RateLimited(decision)
            return error_response(429, refusal.code, message, refusal.extra, refusal.headers)
        response = HttpResponse(
            f"<!doctype html><title>Too many attempts</title><p>{message}</p>",
            status=429,
            content_type="text/html; charset=utf-8",
        )
        for name, value in decision.headers().items():
            response[name] = value
        response["Retry-After"] = str(max(1, math.ceil(decision.retry_after)))
        return response
