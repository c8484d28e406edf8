from __future__ import annotations

from django.urls import path

from tenants.limits import apis

_org = "orgs/<slug:org_slug>/"
urlpatterns = [
    path(_org + "limits/", apis.OrgLimitsApi.as_view(), name="org-limits"),
    path(
        _org + "api-keys/<uuid:key_id>/limits/",
        apis.ApiKeyLimitsApi.as_view(),
        name="apikey-limits",
    ),
    path(_org + "usage/", apis.UsageApi.as_view(), name="usage"),
    path(_org + "usage/export/", apis.UsageExportApi.as_view(), name="usage-export"),
]
