"""Queued runs and dead letters in each organization's admin: inspect; admins replay or discard."""

from __future__ import annotations

from django.contrib import admin, messages

from cadence_site.errors import ApplicationError
from engine.durable import services
from engine.durable.models import QueuedRun
from tenants.tenant_admin import TenantModelAdmin, tenant_admin_site


@admin.register(QueuedRun, site=tenant_admin_site)
class QueuedRunAdmin(TenantModelAdmin):
    list_display = ("created_at", "run_id", "state", "attempts", "queue", "reason")
    list_filter = ("state", "queue")
    search_fields = ("run__id", "idempotency_key", "reason")
    readonly_fields = [f.name for f in QueuedRun._meta.fields]
    actions = ["replay", "discard"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_actions(self, request):
        # Acting on a dead letter needs the write role, though change permission is off for all.
        actions = super().get_actions(request)
        if not super().has_change_permission(request):
            return {}
        return actions

    def _each(self, request, queryset, fn, done: str) -> None:
        count = 0
        for queued in queryset.filter(state=QueuedRun.State.DEAD):
            try:
                fn(queued)
                count += 1
            except ApplicationError as exc:
                self.message_user(request, f"{queued.run_id}: {exc.message}", messages.ERROR)
        self.message_user(request, f"{count} dead letter(s) {done}.")

    @admin.action(description="Replay the selected dead letters from the start")
    def replay(self, request, queryset):
        principal = request.user.get_username()
        self._each(
            request,
            queryset,
            lambda q: services.dead_letter_replay(
                queued=q, principal=principal, actor=request.user
            ),
            "replayed",
        )

    @admin.action(description="Discard the selected dead letters")
    def discard(self, request, queryset):
        self._each(
            request,
            queryset,
            lambda q: services.dead_letter_discard(queued=q, actor=request.user),
            "discarded",
        )
