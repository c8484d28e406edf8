from __future__ import annotations

from django.urls import path

from tenants.sso import apis

urlpatterns = [
    path("orgs/<slug:org_slug>/sso/", apis.SsoProviderApi.as_view(), name="sso-provider"),
]
