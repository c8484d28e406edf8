from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from chat.tests.conftest import chat_orchestrator  # noqa: F401
from orchestrators.tests.conftest import _openai_server_process, openai_server  # noqa: F401


@pytest.fixture
def flaky(world, committed_db, openai_server):  # noqa: F811
    """An orchestrator in alpha whose model is the fake OpenAI server (script it per test)."""
    from orchestrators.models import LLMConfig, OrchestratorInstance
    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build

    def cleanup():
        with schema_context("org_alpha"):
            OrchestratorInstance.objects.filter(slug="flaky").delete()
            LLMConfig.objects.filter(name="flaky").delete()

    cleanup()
    with schema_context("org_alpha"):
        config = llm_config_create(
            name="flaky",
            provider="openai_compatible",
            base_url=openai_server.base_url,
            model="m",
            api_key="sk-flaky-secret",
            max_retries=0,
        )
        instance = orchestrator_create(slug="flaky", name="Flaky", llm_config=config)
    instance_build(
        schema_name="org_alpha", instance_id=str(instance.id), expected_hash=instance.config_hash
    )
    yield instance
    cleanup()


# A flow through every grammar form: prepare, a child cadence whose .sync group finalizes, a
# .split on what that wrote, the agent, and finalize again.
TRACED_FLOW = {
    "name": "traced",
    "steps": [
        {"then": "prepare_prompt"},
        {"child": "post", "cadence": "post"},
        {
            "split": "route",
            "condition": {"field": "finish_reason", "op": "eq", "value": "stop"},
            "if_true": ["agent"],
            "if_false": ["finalize"],
        },
        {"then": "finalize"},
    ],
    "cadences": {"post": {"steps": [{"sync": "fin", "notes": ["finalize"]}]}},
}


@pytest.fixture
def traced_orchestrator(world, committed_db):
    """A ready offline orchestrator in alpha whose flow uses .child, .sync and .split."""
    from orchestrators.models import LLMConfig, OrchestratorInstance
    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build

    def cleanup():
        with schema_context("org_alpha"):
            OrchestratorInstance.objects.filter(slug="traced").delete()
            LLMConfig.objects.filter(name="traced-offline").delete()

    cleanup()
    with schema_context("org_alpha"):
        config = llm_config_create(
            name="traced-offline", provider="offline", model="cadence-offline"
        )
        instance = orchestrator_create(
            slug="traced",
            name="Traced",
            llm_config=config,
            flow=TRACED_FLOW,
            tools=["calculator"],
        )
    assert (
        instance_build(
            schema_name="org_alpha",
            instance_id=str(instance.id),
            expected_hash=instance.config_hash,
        )
        == "ready"
    )
    yield instance
    cleanup()
