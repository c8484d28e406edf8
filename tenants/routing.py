from __future__ import annotations

from django.urls import path

from tenants.consumers import AuditConsumer

websocket_urlpatterns = [
    path("ws/orgs/<slug:org_slug>/audit/", AuditConsumer.as_asgi()),
]
