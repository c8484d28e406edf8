from __future__ import annotations

from django.urls import path

from tenants.invitations import apis

urlpatterns = [
    path("invitations/accept/", apis.InvitationAcceptApi.as_view(), name="invitation-accept"),
    path(
        "orgs/<slug:org_slug>/invitations/",
        apis.InvitationListApi.as_view(),
        name="invitation-list",
    ),
    path(
        "orgs/<slug:org_slug>/invitations/<uuid:invitation_id>/",
        apis.InvitationDetailApi.as_view(),
        name="invitation-detail",
    ),
    path(
        "orgs/<slug:org_slug>/invitations/<uuid:invitation_id>/resend/",
        apis.InvitationResendApi.as_view(),
        name="invitation-resend",
    ),
]
