"""The OpenAI-compatible surface (/v1/…): the organization comes from the API key, not the path."""

from __future__ import annotations

from django.urls import path

from chat.openai import views
from chat.openai.responses import views as responses

urlpatterns = [
    path("models", views.models_list, name="openai-models"),
    path("models/<str:model>", views.model_detail, name="openai-model-detail"),
    path("chat/completions", views.chat_completions, name="openai-chat-completions"),
    path("responses", responses.responses, name="openai-responses"),
    path("responses/<str:response_id>", responses.response_detail, name="openai-response-detail"),
]
