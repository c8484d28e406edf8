"""Resolves the organization a request names and enters its schema for the request's duration.

Our own instead of django-tenants' subfolder middleware, which is beta, matches Domain.domain
rather than the slug and breaks under ASGI (FIELD-NOTES.md). Sources, in order: the path
(`/api/v1/orgs/<slug>/…`, `/orgs/<slug>/…`), then the host (`<slug>.<base domain>` or an
organization's own domain). Membership is checked later, by the view, so that an unknown
organization and a foreign one give the same 404.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.db import connection
from django.http import Http404
from django.urls import set_script_prefix

from cadence_site.requestlog import org_var
from tenants.resolution import org_by_slug, slug_for_host

_API_ORG = re.compile(r"^/api/v1/orgs/(?P<slug>[^/]+)(?:/|$)")
_PAGE_ORG = re.compile(r"^/orgs/(?P<slug>[^/]+)(?P<rest>/.*)?$")
# On an organization's host these stay global; everything else is the organization's.
_GLOBAL_PREFIXES = (
    "/api/v1/me",
    "/api/v1/orgs",
    "/api/schema",
    "/api/docs",
    "/v1/",
    "/static/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/ws/",
)


class TenantResolutionMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.org = None
        path = request.path_info
        host_slug = None
        try:
            host_slug = slug_for_host(request.get_host())
        except Exception:  # DisallowedHost is answered by CommonMiddleware later, with its own 400.
            host_slug = None

        slug, page_rest = None, None
        if match := _API_ORG.match(path):
            slug = match["slug"]
        elif match := _PAGE_ORG.match(path):
            slug, page_rest = match["slug"], match["rest"] or "/"
        elif host_slug and not path.startswith(_GLOBAL_PREFIXES):
            slug = host_slug
            if path.startswith("/api/v1/"):
                request.path_info = f"/api/v1/orgs/{slug}/{path[len('/api/v1/') :]}"
            else:
                page_rest = path
        if slug is None:
            return self.get_response(request)
        if host_slug and host_slug != slug:
            raise Http404("No such organization.")
        org = org_by_slug(slug)
        if org is None:
            if page_rest is not None and not request.user.is_authenticated:
                # Anonymous visitors get the login redirect a real organization gives them, so
                # the answer does not reveal which organizations exist.
                return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
            raise Http404("No such organization.")

        request.org = org
        token = org_var.set(org.slug)
        connection.set_tenant(org.tenant())
        try:
            if page_rest is not None:
                # Organization pages (its admin, chat) resolve against their own URLconf, with the
                # script prefix set so that every reverse() inside them keeps /orgs/<slug>/.
                request.urlconf = settings.TENANT_ADMIN_URLCONF
                request.path_info = page_rest
                set_script_prefix(
                    request.META.get("SCRIPT_NAME", "")
                    + (f"/orgs/{slug}/" if path.startswith("/orgs/") else "/")
                )
            return self.get_response(request)
        finally:
            connection.set_schema_to_public()
            org_var.reset(token)
            if page_rest is not None:
                set_script_prefix(request.META.get("SCRIPT_NAME", "") + "/")
