"""Demo content for `make run`: an offline LLM configuration and a ready orchestrator in `acme`."""

from __future__ import annotations

from django_tenants.utils import schema_context

from orchestrators.models import LLMConfig, OrchestratorInstance


def create_demo(*, org, stdout=None) -> None:
    from orchestrators import services
    from orchestrators.tasks import instance_build

    with schema_context(org.schema_name):
        config = LLMConfig.objects.filter(
            name="Offline demo"
        ).first() or services.llm_config_create(
            name="Offline demo", provider="offline", model="cadence-offline"
        )
        instance = OrchestratorInstance.objects.filter(slug="assistant").first()
        if instance is None:
            instance = services.orchestrator_create(
                slug="assistant",
                name="Demo assistant",
                description='Answers with the offline demo provider; try: /tool calculator {"expression": "6*7"}',
                llm_config=config,
                tools=["clock", "calculator"],
                tier="hot",
            )
        if instance.status != OrchestratorInstance.Status.READY:
            # Built here rather than by the worker so that chat works the moment the server is up.
            instance_build(
                schema_name=org.schema_name,
                instance_id=str(instance.id),
                expected_hash=instance.config_hash,
            )
    if stdout is not None:
        stdout.write(f"  Demo orchestrator:   assistant (offline provider) in {org.slug}")
