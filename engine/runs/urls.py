from __future__ import annotations

from django.urls import path

from engine.runs import apis

_run = "orgs/<slug:org_slug>/runs/<str:run_id>/"
urlpatterns = [
    path("orgs/<slug:org_slug>/runs/", apis.RunListApi.as_view(), name="run-list"),
    path(_run, apis.RunDetailApi.as_view(), name="run-detail"),
    path(_run + "steps/", apis.RunStepsApi.as_view(), name="run-steps"),
    path(_run + "steps/<str:seq>/payload/", apis.StepPayloadApi.as_view(), name="run-step-payload"),
    path(_run + "export/", apis.RunExportApi.as_view(), name="run-export"),
    path(_run + "lineage/", apis.RunLineageApi.as_view(), name="run-lineage"),
    path(_run + "replay/", apis.RunReplayApi.as_view(), name="run-replay"),
    path(_run + "logs/", apis.RunLogsApi.as_view(), name="run-logs"),
]
