"""Queued runs and dead letters over REST. Members enqueue; admins replay and discard."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from cadence_site.api import OrgMemberApi, StrictSerializer
from cadence_site.errors import NotFoundError
from engine.durable import services
from engine.durable.models import QueuedRun
from tenants.roles import Role


class EnqueueInput(StrictSerializer):
    class RunInput(StrictSerializer):
        message = serializers.CharField(max_length=services.MAX_INPUT_BYTES, trim_whitespace=False)

    input = RunInput()
    idempotency_key = serializers.CharField(max_length=128)
    deadline = serializers.DateTimeField(required=False)
    callback_url = serializers.URLField(max_length=500, required=False)
    max_attempts = serializers.IntegerField(
        min_value=1, max_value=10, default=services.DEFAULT_MAX_ATTEMPTS
    )
    backoff_seconds = serializers.FloatField(
        min_value=0.1, max_value=3600, default=services.DEFAULT_BACKOFF_SECONDS
    )
    backoff_max_seconds = serializers.FloatField(
        min_value=0.1, max_value=86400, default=services.DEFAULT_BACKOFF_MAX_SECONDS
    )


class ReplayInput(StrictSerializer):
    replay_from = serializers.ChoiceField(choices=["start", "failed_step"], default="start")


class QueuedRunOutput(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    state = serializers.CharField()
    orchestrator = serializers.UUIDField()
    idempotency_key = serializers.CharField(allow_blank=True, allow_null=True)
    attempts = serializers.IntegerField()
    reason = serializers.CharField(allow_blank=True, allow_null=True)
    replay_of = serializers.UUIDField(allow_null=True)
    created_at = serializers.DateTimeField()
    deadline = serializers.DateTimeField(allow_null=True)


class DeadLetterListOutput(serializers.Serializer):
    results = QueuedRunOutput(many=True)


class CallbackSecretOutput(serializers.Serializer):
    secret = serializers.CharField()


class RunEnqueueApi(OrgMemberApi):
    read_role = Role.MEMBER
    required_role = Role.MEMBER

    @extend_schema(
        summary="Queue a run of the orchestrator (idempotent per key)",
        request=EnqueueInput,
        responses={202: QueuedRunOutput},
    )
    def post(self, request, org_slug, instance_id):
        from orchestrators.models import OrchestratorInstance
        from tenants.teams.scoping import require_level, scoped

        data = self.validated(EnqueueInput, request.data)
        scope = self.scope(request)
        # Another team's orchestrator is the same 404 as a missing one (tenants/teams/scoping.py).
        instance = (
            scoped(OrchestratorInstance.objects.select_related("llm_config"), scope)
            .filter(pk=instance_id)
            .first()
        )
        if instance is None:
            raise NotFoundError("No such orchestrator.", "orchestrator_not_found")
        require_level(scope, kind="orchestrator", obj=instance, level="use", what="orchestrator")
        queued, _ = services.queued_run_enqueue(
            instance=instance,
            message=data["input"]["message"],
            idempotency_key=data["idempotency_key"],
            deadline=data.get("deadline"),
            callback_url=data.get("callback_url", ""),
            principal=str(self.actor(request)),
            max_attempts=data["max_attempts"],
            backoff_seconds=data["backoff_seconds"],
            backoff_max_seconds=data["backoff_max_seconds"],
        )
        return Response(services.queued_output(queued), status=202)


class DeadLetterListApi(OrgMemberApi):
    @extend_schema(
        summary="Queued runs that failed for good", responses={200: DeadLetterListOutput}
    )
    def get(self, request, org_slug):
        from engine.runs.selectors import runs_visible

        visible = runs_visible(principal=request.user, role=request.role, org=request.org)
        dead = QueuedRun.objects.select_related("run").filter(
            state=QueuedRun.State.DEAD, run__in=visible.values("pk")
        )[:200]
        return Response({"results": [services.queued_output(q) for q in dead]})


class DeadLetterDetailApi(OrgMemberApi):
    @extend_schema(summary="One queued run's state", responses={200: QueuedRunOutput})
    def get(self, request, org_slug, run_id):
        from engine.runs.selectors import run_get_for_user

        # Members read the dead letters of their own runs, as they read runs.
        run_get_for_user(
            principal=request.user, role=request.role, run_id=str(run_id), org=request.org
        )
        return Response(services.queued_output(services.dead_letter_get(run_id=run_id)))


class DeadLetterActionApi(OrgMemberApi):
    required_role = Role.ADMIN
    action: str = ""

    @extend_schema(
        summary="Replay (from the start or the failed step) or discard a dead letter",
        request=ReplayInput,
        responses={202: QueuedRunOutput, 200: QueuedRunOutput},
    )
    def post(self, request, org_slug, run_id):
        queued = services.dead_letter_get(run_id=run_id)
        if self.action == "replay":
            data = self.validated(ReplayInput, request.data)
            replay = services.dead_letter_replay(
                queued=queued,
                principal=str(self.actor(request)),
                actor=self.actor(request),
                from_failed_step=data["replay_from"] == "failed_step",
            )
            return Response(services.queued_output(replay), status=202)
        return Response(
            services.queued_output(
                services.dead_letter_discard(queued=queued, actor=self.actor(request))
            )
        )


class CallbackSecretApi(OrgMemberApi):
    """The secret that signs this organization's run callbacks (admins only)."""

    read_role = Role.ADMIN

    @extend_schema(
        summary="The secret that signs this organization's run callbacks",
        responses={200: CallbackSecretOutput},
    )
    def get(self, request, org_slug):
        from django.db import connection

        from engine.durable.callbacks import callback_secret

        return Response({"secret": callback_secret(connection.schema_name)})
