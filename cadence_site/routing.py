"""Every app's WebSocket routes; each path names its organization (/ws/orgs/<slug>/…)."""

from __future__ import annotations

from chat.routing import websocket_urlpatterns as chat_routes
from engine.runs.routing import websocket_urlpatterns as run_routes
from tenants.routing import websocket_urlpatterns as tenant_routes

websocket_urlpatterns = [*tenant_routes, *chat_routes, *run_routes]
