from __future__ import annotations

from django.urls import path

from tenants.teams import apis

urlpatterns = [
    path("orgs/<slug:org_slug>/teams/", apis.TeamListApi.as_view(), name="team-list"),
    path(
        "orgs/<slug:org_slug>/teams/<uuid:team_id>/",
        apis.TeamDetailApi.as_view(),
        name="team-detail",
    ),
    path(
        "orgs/<slug:org_slug>/teams/<uuid:team_id>/members/",
        apis.TeamMemberListApi.as_view(),
        name="team-member-list",
    ),
    path(
        "orgs/<slug:org_slug>/teams/<uuid:team_id>/members/<int:user_id>/",
        apis.TeamMemberDetailApi.as_view(),
        name="team-member-detail",
    ),
]
