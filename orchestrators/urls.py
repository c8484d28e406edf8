from __future__ import annotations

from django.urls import path

from orchestrators import apis, share_apis

_org = "orgs/<slug:org_slug>/"
urlpatterns = [
    path(_org + "llm-configs/", apis.LLMConfigListApi.as_view(), name="llmconfig-list"),
    path(
        _org + "llm-configs/<uuid:config_id>/",
        apis.LLMConfigDetailApi.as_view(),
        name="llmconfig-detail",
    ),
    path(
        _org + "llm-configs/<uuid:config_id>/shares/",
        share_apis.LLMConfigSharesApi.as_view(),
        name="llmconfig-shares",
    ),
    path(
        _org + "llm-configs/<uuid:config_id>/shares/<uuid:team_id>/",
        share_apis.LLMConfigShareDetailApi.as_view(),
        name="llmconfig-share-detail",
    ),
    path(_org + "frameworks/", apis.FrameworkListApi.as_view(), name="framework-list"),
    path(_org + "orchestrators/", apis.InstanceListApi.as_view(), name="orchestrator-list"),
    path(
        _org + "orchestrators/<str:instance_id>/",
        apis.InstanceDetailApi.as_view(),
        name="orchestrator-detail",
    ),
    path(
        _org + "orchestrators/<str:instance_id>/activate/",
        apis.InstanceActionApi.as_view(action="activate"),
        name="orchestrator-activate",
    ),
    path(
        _org + "orchestrators/<str:instance_id>/suspend/",
        apis.InstanceActionApi.as_view(action="suspend"),
        name="orchestrator-suspend",
    ),
    path(
        _org + "orchestrators/<str:instance_id>/rebuild/",
        apis.InstanceActionApi.as_view(action="rebuild"),
        name="orchestrator-rebuild",
    ),
    path(
        _org + "orchestrators/<str:instance_id>/diagram/",
        apis.InstanceDiagramApi.as_view(),
        name="orchestrator-diagram",
    ),
    path(
        _org + "orchestrators/<str:instance_id>/shares/",
        share_apis.OrchestratorSharesApi.as_view(),
        name="orchestrator-shares",
    ),
    path(
        _org + "orchestrators/<str:instance_id>/shares/<uuid:team_id>/",
        share_apis.OrchestratorShareDetailApi.as_view(),
        name="orchestrator-share-detail",
    ),
    path(
        _org + "orchestrators/<str:instance_id>/invoke/",
        apis.InstanceInvokeApi.as_view(),
        name="orchestrator-invoke",
    ),
]
