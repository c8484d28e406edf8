"""Building an orchestrator after a change commits: validate, build, probe, set the status, announce."""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
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


def lease_seconds() -> int:
    return getattr(settings, "CADENCE_BUILD_LEASE_SECONDS", 60)


def build_claim(*, instance_id, expected_hash: str) -> bool:
    """In the tenant's schema: take the build of this configuration, if it is still to be built
    and no live lease holds it (one conditional UPDATE: two workers cannot both win)."""
    now = timezone.now()
    return bool(
        OrchestratorInstance.objects.filter(
            pk=instance_id, config_hash=expected_hash, status=Status.BUILDING
        )
        .filter(Q(build_lease_until__isnull=True) | Q(build_lease_until__lt=now))
        .update(
            build_lease_until=now + timedelta(seconds=lease_seconds()),
            build_owner=f"{socket.gethostname()}:{os.getpid()}"[:200],
        )
    )


def builds_stranded(*, schema_name: str) -> list[tuple[str, str]]:
    """(id, hash) of builds in `schema_name` whose worker is gone: a lease that expired, or a build
    never claimed within a lease's length of being asked for (its message was lost)."""
    now = timezone.now()
    unclaimed_since = now - timedelta(seconds=lease_seconds())
    with schema_context(schema_name):
        return [
            (str(pk), digest)
            for pk, digest in OrchestratorInstance.objects.filter(status=Status.BUILDING)
            .filter(
                Q(build_lease_until__lt=now)
                | Q(build_lease_until__isnull=True, updated_at__lt=unclaimed_since)
            )
            .values_list("pk", "config_hash")
        ]


def builds_sweep(*, queue: str | None = None) -> int:
    """Hand every stranded build to a live worker; the number re-enqueued."""
    from tenants.models import Organization

    count = 0
    for schema_name in Organization.objects.values_list("schema_name", flat=True):
        for instance_id, digest in builds_stranded(schema_name=schema_name):
            options = {"queue": queue} if queue else {}
            orchestrator_build.apply_async((schema_name, instance_id, digest), **options)
            logger.warning(
                "stranded orchestrator build handed to another worker",
                extra={"schema": schema_name, "instance": instance_id},
            )
            count += 1
    return count


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
        if not build_claim(instance_id=instance.pk, expected_hash=expected_hash):
            # Built already (a redelivered message), or another worker holds a live lease.
            return "claimed" if instance.status == Status.BUILDING else instance.status
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
            ).update(
                status=Status.FAILED,
                status_message=message[:2000],
                build_lease_until=None,
                build_owner="",
            )
            return Status.FAILED
        with transaction.atomic():
            updated = (
                OrchestratorInstance.objects.filter(pk=instance.pk, config_hash=expected_hash)
                .exclude(status=Status.SUSPENDED)
                .update(
                    status=Status.READY, status_message="", build_lease_until=None, build_owner=""
                )
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


@shared_task(name="orchestrators.builds_sweep", ignore_result=True)
def orchestrator_builds_sweep() -> int:
    return builds_sweep()
