"""The periodic purge (beat: `retention.purge`, every CADENCE_RETENTION_INTERVAL seconds)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django_tenants.utils import schema_context

from engine.retention.services import PurgeReport, organization_purge

logger = logging.getLogger(__name__)


@shared_task(name="retention.purge", acks_late=True)
def purge() -> dict[str, int]:
    """Every organization in turn; one failing organization does not stop the others."""
    from tenants.models import Organization

    total = PurgeReport()
    orgs = (
        Organization.objects.exclude(
            schema_name__in=[settings.PUBLIC_SCHEMA_NAME, settings.CADENCE_TEMPLATE_SCHEMA]
        )
        .order_by("schema_name")
        .values_list("id", "schema_name")
    )
    for org_id, schema_name in orgs:
        try:
            with schema_context(schema_name):
                report = organization_purge(org_id=org_id)
        except Exception:
            logger.exception("retention purge failed", extra={"schema": schema_name})
            continue
        if report.runs:
            logger.info(
                "runs purged",
                extra={"schema": schema_name, "runs": report.runs, "files": report.files},
            )
        total.add(report)
    return vars(total)
