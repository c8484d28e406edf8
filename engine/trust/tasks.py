"""Periodic signed tree heads, published to the witnesses (Celery beat: `tree_heads_publish`)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django_tenants.utils import schema_context

from engine.trust import log, witness
from engine.trust.models import TreeHead

logger = logging.getLogger(__name__)


def _organization_schemas() -> list[str]:
    from tenants.models import Organization

    return list(
        Organization.objects.exclude(
            schema_name__in=[settings.PUBLIC_SCHEMA_NAME, settings.CADENCE_TEMPLATE_SCHEMA]
        )
        .order_by("schema_name")
        .values_list("schema_name", flat=True)
    )


def publish_for(schema_name: str) -> TreeHead | None:
    """Sign the organization's tree head if its log grew; returns the new head, if any."""
    with schema_context(schema_name):
        if log.log_size() == 0:
            return None
        latest = TreeHead.objects.order_by("-size", "-created_at").first()
        tree_head = log.tree_head_sign()
        if latest is not None and latest.pk == tree_head.pk and latest.witnessed_at is not None:
            return None
        return tree_head


@shared_task(name="trust.tree_heads_publish")
def tree_heads_publish() -> int:
    published = 0
    for schema_name in _organization_schemas():
        tree_head = publish_for(schema_name)
        if tree_head is None:
            continue
        published += 1
        if witness.witness_configured():
            tree_head_witness_task.delay(schema_name=schema_name, tree_head_id=tree_head.pk)
    return published


@shared_task(
    name="trust.tree_head_witness",
    autoretry_for=(witness.WitnessError,),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=8,
)
def tree_head_witness_task(*, schema_name: str, tree_head_id: int) -> bool:
    with schema_context(schema_name):
        tree_head = TreeHead.objects.filter(pk=tree_head_id).first()
        if tree_head is None or tree_head.witnessed_at is not None:
            return False  # already delivered: a retried or duplicated task is a no-op
        witness.tree_head_witness(tree_head=tree_head)
        return True
