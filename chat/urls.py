from __future__ import annotations

from django.urls import path

from chat import apis

_org = "orgs/<slug:org_slug>/"
urlpatterns = [
    path(_org + "conversations/", apis.ConversationListApi.as_view(), name="conversation-list"),
    path(
        _org + "conversations/<uuid:conversation_id>/",
        apis.ConversationDetailApi.as_view(),
        name="conversation-detail",
    ),
    path(
        _org + "conversations/<uuid:conversation_id>/messages/",
        apis.MessageListApi.as_view(),
        name="message-list",
    ),
    path(
        _org + "conversations/<uuid:conversation_id>/cancel/",
        apis.MessageCancelApi.as_view(),
        name="message-cancel",
    ),
]
