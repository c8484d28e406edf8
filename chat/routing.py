from __future__ import annotations

from django.urls import path

from chat.consumers import ConversationConsumer

websocket_urlpatterns = [
    path(
        "ws/orgs/<slug:org_slug>/conversations/<uuid:conversation_id>/",
        ConversationConsumer.as_asgi(),
    ),
]
