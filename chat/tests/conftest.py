from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from orchestrators.tests.conftest import _openai_server_process, openai_server  # noqa: F401


@pytest.fixture
def chat_orchestrator(world, committed_db):
    """A ready offline orchestrator in alpha (committed: turns write from other threads)."""
    from chat.models import Conversation
    from orchestrators.models import LLMConfig, OrchestratorInstance
    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build

    def cleanup():
        with schema_context("org_alpha"):
            Conversation.objects.filter(orchestrator__slug__in=["chatbot", "slowbot"]).delete()
            OrchestratorInstance.objects.filter(slug__in=["chatbot", "slowbot"]).delete()
            LLMConfig.objects.filter(name__in=["chat-offline", "chat-slow"]).delete()

    cleanup()
    with schema_context("org_alpha"):
        fast = llm_config_create(name="chat-offline", provider="offline", model="cadence-offline")
        slow = llm_config_create(name="chat-slow", provider="offline", model="cadence-offline@60ms")
        made = {
            "fast": orchestrator_create(
                slug="chatbot", name="Chatbot", llm_config=fast, tools=["calculator"]
            ),
            "slow": orchestrator_create(slug="slowbot", name="Slowbot", llm_config=slow),
        }
    for instance in made.values():
        assert (
            instance_build(
                schema_name="org_alpha",
                instance_id=str(instance.id),
                expected_hash=instance.config_hash,
            )
            == "ready"
        )
    yield made
    cleanup()


@pytest.fixture
def temp_member(committed_member):
    """A committed member of alpha (a user of their own); removed afterwards."""
    return committed_member("alpha-ws-member", "member")[0]
