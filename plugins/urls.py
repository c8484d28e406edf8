from __future__ import annotations

from django.urls import path

from plugins import apis, mcp_apis

_org = "orgs/<slug:org_slug>/"
urlpatterns = [
    path("plugins/schema/1.json", apis.ManifestSchemaApi.as_view(), name="plugin-schema"),
    path(_org + "plugins/", apis.PluginListApi.as_view(), name="plugin-list"),
    path(_org + "plugins/<str:plugin_id>/", apis.PluginDetailApi.as_view(), name="plugin-detail"),
]
for _action in ("enable", "disable", "deprecate", "approve"):
    urlpatterns.append(
        path(
            _org + f"plugins/<str:plugin_id>/versions/<str:version>/{_action}/",
            apis.PluginVersionActionApi.as_view(action=_action),
            name=f"plugin-version-{_action}",
        )
    )
urlpatterns += [
    path(_org + "mcp-servers/", mcp_apis.McpServerListApi.as_view(), name="mcp-server-list"),
    path(
        _org + "mcp-servers/<uuid:server_id>/",
        mcp_apis.McpServerDetailApi.as_view(),
        name="mcp-server-detail",
    ),
]
for _action in ("refresh", "approve"):
    urlpatterns.append(
        path(
            _org + f"mcp-servers/<uuid:server_id>/{_action}/",
            mcp_apis.McpServerActionApi.as_view(action=_action),
            name=f"mcp-server-{_action}",
        )
    )
