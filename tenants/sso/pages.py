"""The browser's side of single sign-on: `/orgs/<slug>/sso/login/` sends the browser to the
organization's provider, `/orgs/<slug>/sso/callback/` brings it back signed in.

The provider is called from these sync views through `async_to_sync`: the one outbound client is
async, and a sign-in is a handful of short requests.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

from asgiref.sync import async_to_sync
from authlib.common.security import generate_token
from django.conf import settings
from django.contrib.auth import login
from django.db import transaction
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache

from cadence_site.errors import ApplicationError
from orchestrators import crypto
from tenants.models import Organization
from tenants.roles import Role, role_at_least
from tenants.services import audit_record
from tenants.sso import oidc
from tenants.sso.models import SsoLoginState
from tenants.sso.oidc import SsoError
from tenants.sso.selectors import sso_callback_path, sso_provider_get
from tenants.sso.signin import sso_sign_in

logger = logging.getLogger(__name__)

BROWSER_COOKIE = "cadence_sso"
MAX_PARAM = 2000


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def redirect_uri(request, org) -> str:
    return request.build_absolute_uri(sso_callback_path(org))


def _safe_next(value: str | None, org) -> str:
    if not value or len(value) > 500:
        return ""
    if not value.startswith(f"/orgs/{org.slug}/") or "\\" in value:
        return ""
    return value if url_has_allowed_host_and_scheme(value, allowed_hosts=None) else ""


def _refused(request, org, exc: ApplicationError):
    logger.info("sso sign-in refused", extra={"org_slug": org.slug, "code": exc.code})
    if exc.code not in ("sso_not_configured",):
        with transaction.atomic():
            audit_record(
                org=org,
                action="sso.sign_in_refused",
                actor="anonymous",
                target=org.slug,
                details={"code": exc.code, "reason": exc.message[:300]},
            )
    return render(
        request,
        "sso/error.html",
        {"org": org, "message": exc.message, "code": exc.code},
        status=exc.status_code,
    )


def _provider(org):
    provider = sso_provider_get(org=org)
    if provider is None:
        raise SsoError(
            "Single sign-on is not configured for this organization.",
            "sso_not_configured",
            status=404,
        )
    if not org.is_active:
        raise SsoError("This organization is suspended.", "org_suspended", status=403)
    return provider


def _organization(request) -> Organization:
    # The middleware's cached reference is enough to route; a sign-in writes rows that need the
    # organization itself.
    return Organization.objects.get(pk=request.org.id)


@never_cache
def sso_login(request):
    org = _organization(request)
    try:
        provider = _provider(org)
        document = async_to_sync(oidc.discover)(provider.issuer)
    except ApplicationError as exc:
        return _refused(request, org, exc)
    auth = oidc.authorization_request(
        document=document,
        client_id=provider.client_id,
        redirect_uri=redirect_uri(request, org),
        scopes=provider.scopes,
    )
    browser = generate_token(43)
    ttl = settings.CADENCE_SSO_STATE_TTL_SECONDS
    now = timezone.now()
    # Abandoned sign-ins are swept here: they are few, and this keeps the table small.
    SsoLoginState.objects.filter(organization=org, expires_at__lt=now).delete()
    SsoLoginState.objects.create(
        organization=org,
        state_hash=_digest(auth.state),
        browser_hash=_digest(browser),
        nonce=auth.nonce,
        code_verifier=auth.code_verifier,
        next_path=_safe_next(request.GET.get("next"), org),
        expires_at=now + timedelta(seconds=ttl),
    )
    response = HttpResponseRedirect(auth.url)
    # Lax: sent on the provider's top-level redirect back, never on a cross-site subrequest.
    response.set_cookie(
        BROWSER_COOKIE,
        browser,
        max_age=ttl,
        path=request.path.removesuffix("login/"),
        httponly=True,
        samesite="Lax",
        secure=settings.SESSION_COOKIE_SECURE,
    )
    return response


def _state_consume(org, state: str) -> SsoLoginState | None:
    """The sign-in this state started, removed so that it can never be used again."""
    if not state or len(state) > 200:
        return None
    with transaction.atomic():
        row = (
            SsoLoginState.objects.select_for_update()
            .filter(organization=org, state_hash=_digest(state))
            .first()
        )
        if row is not None:
            SsoLoginState.objects.filter(pk=row.pk).delete()
    return row


def _callback(request, org):
    provider = _provider(org)
    params = request.GET
    if any(len(v) > MAX_PARAM for v in params.values()):
        raise SsoError("The provider's answer is too long.", "sso_invalid_callback")
    row = _state_consume(org, params.get("state", ""))
    if row is None or row.expires_at <= timezone.now():
        raise SsoError(
            "This sign-in was already used or has expired. Start again from the sign-in link.",
            "sso_state_invalid",
        )
    browser = request.COOKIES.get(BROWSER_COOKIE, "")
    if not browser or _digest(browser) != row.browser_hash:
        raise SsoError(
            "This sign-in was started in another browser. Start again from the sign-in link.",
            "sso_state_invalid",
        )
    if params.get("error"):
        raise SsoError(
            f"The provider refused the sign-in: {params['error'][:100]}"
            + (f" ({params['error_description'][:200]})" if params.get("error_description") else "")
            + ".",
            "sso_provider_refused",
            status=403,
        )
    code = params.get("code", "")
    if not code:
        raise SsoError("The provider's answer has no code.", "sso_invalid_callback")
    assertion = async_to_sync(oidc.code_exchange)(
        issuer=provider.issuer,
        client_id=provider.client_id,
        client_secret=oidc_secret(provider),
        redirect_uri=redirect_uri(request, org),
        code=code,
        code_verifier=row.code_verifier,
        nonce=row.nonce,
        claim=provider.claim,
    )
    user, membership = sso_sign_in(org=org, provider=provider, assertion=assertion)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    if row.next_path:
        return row.next_path
    admin = role_at_least(membership.role, Role.ADMIN)
    return f"/orgs/{org.slug}/{'admin' if admin else 'chat'}/"


def oidc_secret(provider) -> str:
    try:
        return crypto.decrypt(provider.client_secret_encrypted)
    except ValueError:
        raise SsoError(
            "The stored client secret cannot be decrypted with this server's keys; an admin "
            "must enter it again.",
            "sso_secret_unreadable",
            status=500,
        ) from None


@never_cache
def sso_callback(request):
    org = _organization(request)
    try:
        target = _callback(request, org)
    except ApplicationError as exc:  # SsoError, and the services' own (a plan's member quota)
        response = _refused(request, org, exc)
    else:
        response = HttpResponseRedirect(target)
    response.delete_cookie(BROWSER_COOKIE, path=request.path.removesuffix("callback/"))
    return response
