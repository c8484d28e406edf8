"""Test factories for orchestrators: a built, ready instance on a given LLM configuration.

Most tests that run turns need the same thing: an LLM configuration, an orchestrator on it, and
the build task run so the instance is `ready`. `ready_orchestrator` does that in one call (its
configuration is named after the slug) and `orchestrators_remove` undoes it, so a fixture is:

    @pytest.fixture
    def bot(world, committed_db):
        orchestrators_remove("org_alpha", "mybot")
        yield ready_orchestrator("org_alpha", "mybot")
        orchestrators_remove("org_alpha", "mybot")
"""

from __future__ import annotations

from typing import Any

from django_tenants.utils import schema_context


def ready_orchestrator(
    schema_name: str,
    slug: str,
    *,
    provider: str = "offline",
    model: str = "cadence-offline",
    llm: dict[str, Any] | None = None,
    **instance: Any,
):
    """A ready orchestrator `slug` in `schema_name` on a new configuration named `slug`."""
    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build

    with schema_context(schema_name):
        config = llm_config_create(name=slug, provider=provider, model=model, **(llm or {}))
        created = orchestrator_create(
            slug=slug, name=instance.pop("name", slug), llm_config=config, **instance
        )
    built = instance_build(
        schema_name=schema_name, instance_id=str(created.id), expected_hash=created.config_hash
    )
    assert built == "ready", f"{slug} did not build: {built}"
    return created


def orchestrators_remove(schema_name: str, *slugs: str) -> None:
    """Remove these orchestrators, their conversations and the configurations named after them."""
    from chat.models import Conversation
    from orchestrators.models import LLMConfig, OrchestratorInstance

    with schema_context(schema_name):
        Conversation.objects.filter(orchestrator__slug__in=slugs).delete()
        OrchestratorInstance.objects.filter(slug__in=slugs).delete()
        LLMConfig.objects.filter(name__in=slugs).delete()
