from __future__ import annotations

from django.urls import path

from engine.alerts import apis

urlpatterns = [
    path(
        "orgs/<slug:org_slug>/alert-rules/",
        apis.AlertRuleListApi.as_view(),
        name="alert-rule-list",
    ),
    path(
        "orgs/<slug:org_slug>/alert-rules/<str:rule_id>/",
        apis.AlertRuleDetailApi.as_view(),
        name="alert-rule-detail",
    ),
    path(
        "orgs/<slug:org_slug>/alert-rules/<str:rule_id>/history/",
        apis.AlertRuleHistoryApi.as_view(),
        name="alert-rule-history",
    ),
    path(
        "orgs/<slug:org_slug>/alert-rules/<str:rule_id>/shares/",
        apis.AlertRuleSharesApi.as_view(),
        name="alert-rule-shares",
    ),
    path(
        "orgs/<slug:org_slug>/alert-rules/<str:rule_id>/shares/<uuid:team_id>/",
        apis.AlertRuleShareDetailApi.as_view(),
        name="alert-rule-share-detail",
    ),
]
