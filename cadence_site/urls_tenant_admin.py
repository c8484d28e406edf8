"""Pages of one organization, served under /orgs/<slug>/ (or its own host); see tenants/middleware.py."""

from __future__ import annotations

from django.urls import path
from django.views.generic import RedirectView

from chat.pages import chat_page
from tenants.sso.pages import sso_callback, sso_login
from tenants.tenant_admin import tenant_admin_site

urlpatterns = [
    path("admin/", tenant_admin_site.urls),
    path("chat/", chat_page, name="chat"),
    path("sso/login/", sso_login, name="sso-login"),
    path("sso/callback/", sso_callback, name="sso-callback"),
    path("", RedirectView.as_view(url="admin/", permanent=False)),
]

handler400 = "cadence_site.errors.handler400"
handler403 = "cadence_site.errors.handler403"
handler404 = "cadence_site.errors.handler404"
handler500 = "cadence_site.errors.handler500"
