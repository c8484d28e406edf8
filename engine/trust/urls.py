from __future__ import annotations

from django.urls import path

from engine.trust import apis

_org = "orgs/<slug:org_slug>/"
urlpatterns = [
    path(_org + "runs/<uuid:run_id>/proof/", apis.RunProofApi.as_view(), name="run-proof"),
    path(_org + "runs/<uuid:run_id>/bundle/", apis.RunBundleApi.as_view(), name="run-bundle"),
    path(
        _org + "runs/<uuid:run_id>/proof/replay/",
        apis.RunProofReplayApi.as_view(),
        name="run-proof-replay",
    ),
    path(_org + "runs/<uuid:run_id>/drift/", apis.RunDriftApi.as_view(), name="run-drift"),
    path(_org + "drift/", apis.DriftReportApi.as_view(), name="drift-report"),
    path(
        _org + "transparency/checkpoint/",
        apis.CheckpointApi.as_view(),
        name="transparency-checkpoint",
    ),
    path(
        _org + "transparency/inclusion/",
        apis.InclusionApi.as_view(),
        name="transparency-inclusion",
    ),
    path(
        _org + "transparency/consistency/",
        apis.ConsistencyApi.as_view(),
        name="transparency-consistency",
    ),
]
