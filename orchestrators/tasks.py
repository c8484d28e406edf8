"""Building an orchestrator after a change commits: validate, build, probe, set the status, announce."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import transaction
from django_tenants.utils import schema_context

from orchestrators import lifecycle
from orchestrators.models import OrchestratorInstance

logger = logging.getLogger(__name__)
Status = OrchestratorInstance.Status


def _probe(llm) -> None:
    """Ask an OpenAI-compatible endpoint for its models: an unreachable URL or a rejected key fails
    the build with its reason instead of failing the first chat."""
    if llm.provider != "openai_compatible":
        return
    import asyncio

    import httpx

    from cadence_site.outbound import async_client
    from orchestrators.runtime import LLMError

    async def probe() -> None:
        async with async_client(timeout=min(llm.timeout, 10.0)) as client:
            try:
                response = await client.get(
                    llm.base_url.rstrip("/") + "/models",
                    headers={"Authorization": f"Bearer {llm.api_key}"},
                )
            except httpx.HTTPError as exc:
                raise LLMError(
                    f"The model endpoint is unreachable: {type(exc).__name__}.", "llm_unreachable"
                ) from None
        if response.status_code in (401, 403):
            raise LLMError(
                "The provider rejected the API key.", "llm_auth_failed", response.status_code
            )
        if response.status_code >= 500:
            raise LLMError(
                f"The model endpoint answered {response.status_code}.",
                "llm_unavailable",
                response.status_code,
            )

    asyncio.run(probe())


def instance_build(*, schema_name: str, instance_id: str, expected_hash: str) -> str:
    """Returns the resulting status; safe to run twice (a stale or repeated build changes nothing)."""
    from orchestrators.adapters import adapter_for
    from orchestrators.services import instance_validate, runtime_config
    from tenants.models import Organization

    org = Organization.objects.filter(schema_name=schema_name).only("slug").first()
    if org is None:
        return "gone"
    with schema_context(schema_name):
        instance = (
            OrchestratorInstance.objects.select_related("llm_config").filter(pk=instance_id).first()
        )
        if instance is None:
            lifecycle.announce(
                schema_name=schema_name,
                instance_id=instance_id,
                config_hash="",
                action=lifecycle.DROP,
            )
            return "gone"
        if instance.status == Status.SUSPENDED or instance.config_hash != expected_hash:
            # Suspended meanwhile, or changed again: that change scheduled its own build.
            return instance.status
        try:
            instance_validate(instance)
            config = runtime_config(instance, org_slug=org.slug)
            adapter_for(instance.framework).build(config)
            _probe(config.llm)
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            logger.warning(
                "orchestrator build failed", extra={"instance": instance.slug, "error": message}
            )
            OrchestratorInstance.objects.filter(pk=instance.pk, config_hash=expected_hash).exclude(
                status=Status.SUSPENDED
            ).update(status=Status.FAILED, status_message=message[:2000])
            return Status.FAILED
        with transaction.atomic():
            updated = (
                OrchestratorInstance.objects.filter(pk=instance.pk, config_hash=expected_hash)
                .exclude(status=Status.SUSPENDED)
                .update(status=Status.READY, status_message="")
            )
    if updated:
        lifecycle.announce(
            schema_name=schema_name,
            instance_id=instance_id,
            config_hash=expected_hash,
            action=lifecycle.REBUILD,
        )
        logger.info("orchestrator ready", extra={"instance": instance.slug, "schema": schema_name})
        return Status.READY
    return "superseded"


@shared_task(acks_late=True, reject_on_worker_lost=True, name="orchestrators.build")
def orchestrator_build(schema_name: str, instance_id: str, expected_hash: str) -> str:
    return instance_build(
        schema_name=schema_name, instance_id=instance_id, expected_hash=expected_hash
    )
