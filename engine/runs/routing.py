from __future__ import annotations

from django.urls import path

from engine.runs.consumers import RunConsumer, RunsConsumer

websocket_urlpatterns = [
    path("ws/orgs/<slug:org_slug>/runs/", RunsConsumer.as_asgi()),
    path("ws/orgs/<slug:org_slug>/runs/<str:run_id>/", RunConsumer.as_asgi()),
]
