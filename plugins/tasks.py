"""Background work for the plugin catalogs."""

from __future__ import annotations

from celery import shared_task
from django_tenants.utils import schema_context


@shared_task(acks_late=True, reject_on_worker_lost=True, name="plugins.rebuild_users")
def plugin_users_rebuild(schema_name: str, plugin_id: str) -> list[str]:
    """Re-resolve and rebuild one organization's orchestrators that use `plugin_id` (after a system
    plugin changed). Safe to run twice: an unchanged lock and hash make the rebuild a no-op."""
    from plugins.binding import orchestrators_using_rebuild
    from tenants.models import Organization

    if not Organization.objects.filter(schema_name=schema_name).exists():
        return []
    with schema_context(schema_name):
        return orchestrators_using_rebuild(plugin_id=plugin_id)
