from __future__ import annotations

from django.urls import path

from tenants import apis

urlpatterns = [
    path("me", apis.MeApi.as_view(), name="me"),
    path("orgs/", apis.OrgListCreateApi.as_view(), name="org-list"),
    path("orgs/<slug:org_slug>/", apis.OrgDetailApi.as_view(), name="org-detail"),
    path("orgs/<slug:org_slug>/members/", apis.MemberListApi.as_view(), name="member-list"),
    path(
        "orgs/<slug:org_slug>/members/<uuid:member_id>/",
        apis.MemberDetailApi.as_view(),
        name="member-detail",
    ),
    path("orgs/<slug:org_slug>/api-keys/", apis.ApiKeyListApi.as_view(), name="apikey-list"),
    path(
        "orgs/<slug:org_slug>/api-keys/<uuid:key_id>/",
        apis.ApiKeyDetailApi.as_view(),
        name="apikey-detail",
    ),
    path(
        "orgs/<slug:org_slug>/api-keys/<uuid:key_id>/reassign/",
        apis.ApiKeyReassignApi.as_view(),
        name="apikey-reassign",
    ),
    path(
        "orgs/<slug:org_slug>/members/<uuid:member_id>/reassign-keys/",
        apis.MemberKeysReassignApi.as_view(),
        name="member-keys-reassign",
    ),
    path("orgs/<slug:org_slug>/ws-tickets/", apis.WsTicketApi.as_view(), name="ws-ticket"),
]
