from __future__ import annotations

from django.urls import path

from engine.durable import apis

_org = "orgs/<slug:org_slug>/"
urlpatterns = [
    path(
        _org + "orchestrators/<uuid:instance_id>/runs/",
        apis.RunEnqueueApi.as_view(),
        name="orchestrator-runs",
    ),
    path(_org + "dead-letters/", apis.DeadLetterListApi.as_view(), name="dead-letter-list"),
    path(_org + "callbacks/secret/", apis.CallbackSecretApi.as_view(), name="callback-secret"),
    path(
        _org + "dead-letters/<uuid:run_id>/",
        apis.DeadLetterDetailApi.as_view(),
        name="dead-letter-detail",
    ),
    path(
        _org + "dead-letters/<uuid:run_id>/replay/",
        apis.DeadLetterActionApi.as_view(action="replay"),
        name="dead-letter-replay",
    ),
    path(
        _org + "dead-letters/<uuid:run_id>/discard/",
        apis.DeadLetterActionApi.as_view(action="discard"),
        name="dead-letter-discard",
    ),
]
