from __future__ import annotations

import uuid
from typing import Any

from asgiref.sync import async_to_sync
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from cadence_site.api import OrgMemberApi, StrictSerializer
from cadence_site.errors import ApplicationError, NotFoundError
from cadence_site.openapi import results_of
from orchestrators import services
from orchestrators.models import LLMConfig, OrchestratorInstance
from plugins.binding import plugin_set_output
from tenants.roles import Role
from tenants.teams.scoping import require_level, scoped, team_resolve

MAX_MESSAGES = 200
MAX_CONTENT = 32_000


def llm_config_output(config: LLMConfig) -> dict[str, Any]:
    return {
        "id": str(config.id),
        "name": config.name,
        "provider": config.provider,
        "base_url": config.base_url,
        "model": config.model,
        # Write-only: the key itself never leaves the server, only a hint to recognise it.
        "api_key": config.api_key_hint or None,
        "has_api_key": bool(config.api_key_encrypted),
        "temperature": config.temperature,
        "max_tokens": config.max_tokens,
        "timeout_seconds": config.timeout_seconds,
        "max_retries": config.max_retries,
        "team": str(config.team_id) if config.team_id else None,
        "created_at": config.created_at.isoformat(),
        "updated_at": config.updated_at.isoformat(),
        # What the save just warned about (a base URL that did not resolve); empty on reads.
        "warnings": list(getattr(config, "save_warnings", [])),
    }


def instance_output(instance: OrchestratorInstance) -> dict[str, Any]:
    return {
        "id": str(instance.id),
        "slug": instance.slug,
        "name": instance.name,
        "description": instance.description,
        "framework": instance.framework,
        "flow": instance.flow,
        "system_prompt": instance.system_prompt,
        "llm_config": str(instance.llm_config_id) if instance.llm_config_id else None,
        "tools": instance.tools,
        "plugins": plugin_set_output(instance.plugins),
        "plugin_lock": instance.plugin_lock,
        "max_steps": instance.max_steps,
        "tier": instance.tier,
        "status": instance.status,
        "status_message": instance.status_message,
        "config_hash": instance.config_hash,
        "version": instance.version,
        "team": str(instance.team_id) if instance.team_id else None,
        "created_at": instance.created_at.isoformat(),
        "updated_at": instance.updated_at.isoformat(),
    }


# --- response bodies (the schema; outputs above are what the views send) ----------------------


class LLMConfigOutput(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    provider = serializers.ChoiceField(choices=LLMConfig.Provider.choices)
    base_url = serializers.CharField(allow_blank=True)
    model = serializers.CharField()
    api_key = serializers.CharField(
        allow_null=True, help_text="A hint (`sk-…1234`), never the key."
    )
    has_api_key = serializers.BooleanField()
    temperature = serializers.FloatField(allow_null=True)
    max_tokens = serializers.IntegerField(allow_null=True)
    timeout_seconds = serializers.FloatField()
    max_retries = serializers.IntegerField()
    team = serializers.UUIDField(allow_null=True, help_text="Its team; null: organization-wide.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    warnings = serializers.ListField(
        child=serializers.CharField(), help_text="What this save warned about; empty on reads."
    )


class PluginBindingOutput(serializers.Serializer):
    id = serializers.CharField()
    version = serializers.CharField(allow_blank=True)
    settings = serializers.DictField()
    secrets_set = serializers.ListField(
        child=serializers.CharField(), help_text="Which secrets are set, never their values."
    )


class InstanceOutput(serializers.Serializer):
    id = serializers.UUIDField()
    slug = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    framework = serializers.ChoiceField(choices=OrchestratorInstance.Framework.choices)
    flow = serializers.JSONField(help_text="The engine's JSON flow (cadence framework).")
    system_prompt = serializers.CharField(allow_blank=True)
    llm_config = serializers.UUIDField(allow_null=True)
    tools = serializers.ListField(child=serializers.CharField())
    plugins = PluginBindingOutput(many=True)
    plugin_lock = serializers.DictField(help_text="The resolved plugin versions it was built with.")
    max_steps = serializers.IntegerField()
    tier = serializers.ChoiceField(choices=OrchestratorInstance.Tier.choices)
    status = serializers.ChoiceField(choices=OrchestratorInstance.Status.choices)
    status_message = serializers.CharField(allow_blank=True)
    config_hash = serializers.CharField(allow_blank=True)
    version = serializers.IntegerField()
    team = serializers.UUIDField(allow_null=True, help_text="Its team; null: organization-wide.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class FrameworkOutput(serializers.Serializer):
    name = serializers.ChoiceField(choices=OrchestratorInstance.Framework.choices)
    label = serializers.CharField()
    available = serializers.BooleanField(help_text="Installed on this server.")
    install = serializers.CharField(allow_null=True, help_text="How to add it when missing.")


class DiagramOutput(serializers.Serializer):
    format = serializers.ChoiceField(choices=["mermaid"])
    diagram = serializers.CharField()


class InvokeOutput(serializers.Serializer):
    class MessageOutput(serializers.Serializer):
        role = serializers.ChoiceField(choices=["assistant"])
        content = serializers.CharField(allow_blank=True)

    class UsageOutput(serializers.Serializer):
        prompt_tokens = serializers.IntegerField()
        completion_tokens = serializers.IntegerField()
        total_tokens = serializers.IntegerField()

    class ToolCallOutput(serializers.Serializer):
        id = serializers.CharField()
        name = serializers.CharField()
        arguments = serializers.JSONField()
        result = serializers.JSONField(required=False)
        error = serializers.CharField(required=False, allow_null=True)

    class StepOutput(serializers.Serializer):
        name = serializers.CharField()
        status = serializers.CharField()
        duration_ms = serializers.FloatField(allow_null=True)

    class OrchestratorOutput(serializers.Serializer):
        id = serializers.UUIDField()
        slug = serializers.CharField()
        version = serializers.IntegerField()
        config_hash = serializers.CharField()

    message = MessageOutput()
    finish_reason = serializers.CharField()
    usage = UsageOutput()
    tool_calls = ToolCallOutput(many=True)
    steps = StepOutput(many=True)
    run = serializers.UUIDField(help_text="The recorded run of this turn.")
    orchestrator = OrchestratorOutput()


class LLMConfigInput(StrictSerializer):
    name = serializers.CharField(max_length=100)
    provider = serializers.ChoiceField(choices=LLMConfig.Provider.choices)
    base_url = serializers.URLField(max_length=500, required=False, allow_blank=True)
    model = serializers.CharField(max_length=200)
    api_key = serializers.CharField(
        max_length=4000, required=False, allow_blank=True, write_only=True, trim_whitespace=True
    )
    temperature = serializers.FloatField(min_value=0, max_value=2, required=False, allow_null=True)
    max_tokens = serializers.IntegerField(
        min_value=1, max_value=1_000_000, required=False, allow_null=True
    )
    timeout_seconds = serializers.FloatField(min_value=1, max_value=600, required=False)
    max_retries = serializers.IntegerField(min_value=0, max_value=10, required=False)
    team = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="The team it belongs to (its maintainers manage it); null: organization-wide.",
    )


def _with_team(data: dict) -> dict:
    if "team" in data:
        data["team"] = team_resolve(data["team"])
    return data


class LLMConfigListApi(OrgMemberApi):
    # Members reach the write: whether they may create in the team they name (as its
    # maintainer) is the service's decision (tenants/teams/scoping.py).
    required_role = Role.MEMBER

    @extend_schema(
        summary="List the LLM configurations you may see",
        responses={200: results_of(LLMConfigOutput)},
    )
    def get(self, request, org_slug):
        configs = scoped(LLMConfig.objects.all(), self.scope(request), kind="llm_config")
        return Response({"results": [llm_config_output(c) for c in configs]})

    @extend_schema(
        summary="Create an LLM configuration",
        description="The API key is write-only: stored encrypted, never returned.",
        request=LLMConfigInput,
        responses={201: LLMConfigOutput},
    )
    def post(self, request, org_slug):
        data = _with_team(dict(self.validated(LLMConfigInput, request.data)))
        config = services.llm_config_create(
            actor=self.actor(request), scope=self.scope(request), **data
        )
        return Response(llm_config_output(config), status=201)


class LLMConfigMixin:
    def _get(self, config_id) -> LLMConfig:
        """A configuration the caller may not see is the same 404 as one that does not exist."""
        visible = scoped(LLMConfig.objects.all(), self.scope(self.request), kind="llm_config")
        config = visible.filter(pk=config_id).first()
        if config is None:
            raise NotFoundError("No such LLM configuration.")
        return config


class LLMConfigDetailApi(LLMConfigMixin, OrgMemberApi):
    required_role = Role.MEMBER

    @extend_schema(summary="One LLM configuration", responses={200: LLMConfigOutput})
    def get(self, request, org_slug, config_id):
        return Response(llm_config_output(self._get(config_id)))

    @extend_schema(
        summary="Change an LLM configuration",
        description="An empty `api_key` removes the stored key; leaving it out keeps it. "
        "Orchestrators using this configuration are rebuilt.",
        request=LLMConfigInput,
        responses={200: LLMConfigOutput},
    )
    def patch(self, request, org_slug, config_id):
        data = _with_team(dict(self.validated(LLMConfigInput, request.data, partial=True)))
        api_key = data.pop("api_key", None)
        return Response(
            llm_config_output(
                services.llm_config_update(
                    config=self._get(config_id),
                    api_key=api_key,
                    actor=self.actor(request),
                    scope=self.scope(request),
                    **data,
                )
            )
        )

    @extend_schema(summary="Delete an LLM configuration", responses={204: None})
    def delete(self, request, org_slug, config_id):
        services.llm_config_delete(
            config=self._get(config_id), actor=self.actor(request), scope=self.scope(request)
        )
        return Response(status=204)


class FrameworkListApi(OrgMemberApi):
    """The frameworks an orchestrator can run on, which this server has, and how to add the rest."""

    @extend_schema(
        summary="Frameworks an orchestrator can run on",
        description="Which are installed on this server, and how to add a missing one.",
        responses={200: results_of(FrameworkOutput)},
    )
    def get(self, request, org_slug):
        from orchestrators.adapters import framework_catalog

        return Response({"results": framework_catalog()})


class InstanceInput(StrictSerializer):
    slug = serializers.RegexField(r"^[a-z0-9][a-z0-9-]{0,62}$", max_length=63)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    framework = serializers.ChoiceField(
        choices=OrchestratorInstance.Framework.choices, required=False
    )
    flow = serializers.JSONField(required=False)
    system_prompt = serializers.CharField(required=False, allow_blank=True, max_length=20_000)
    llm_config = serializers.UUIDField(required=False, allow_null=True)
    tools = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, max_length=64
    )
    # [{"id", "version", "settings"}]: checked in full by plugins.binding (settings by schema).
    plugins = serializers.ListField(child=serializers.JSONField(), required=False, max_length=50)
    max_steps = serializers.IntegerField(min_value=1, max_value=50, required=False)
    tier = serializers.ChoiceField(choices=OrchestratorInstance.Tier.choices, required=False)
    team = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="The team it belongs to (its maintainers manage it); null: organization-wide.",
    )


def _resolve_llm(data: dict, scope) -> dict:
    """The configuration the input names, among those the caller may see (and the team, if named)."""
    _with_team(data)
    if "llm_config" in data:
        ref = data["llm_config"]
        visible = scoped(LLMConfig.objects.all(), scope, kind="llm_config", level="use")
        config = visible.filter(pk=ref).first() if ref else None
        if ref and config is None:
            raise ApplicationError(
                "No such LLM configuration in this organization.",
                "unknown_llm_config",
                {"field": "llm_config"},
            )
        data["llm_config"] = config
    return data


class InstanceListApi(OrgMemberApi):
    required_role = Role.MEMBER  # the service decides who creates where

    @extend_schema(
        summary="List the orchestrators you may see", responses={200: results_of(InstanceOutput)}
    )
    def get(self, request, org_slug):
        instances = scoped(OrchestratorInstance.objects.all(), self.scope(request))
        return Response({"results": [instance_output(i) for i in instances]})

    @extend_schema(
        summary="Create an orchestrator",
        description="Validated in full, then built in the background (`status` says when it is "
        "ready).",
        request=InstanceInput,
        responses={201: InstanceOutput},
    )
    def post(self, request, org_slug):
        scope = self.scope(request)
        data = _resolve_llm(dict(self.validated(InstanceInput, request.data)), scope)
        instance = services.orchestrator_create(actor=self.actor(request), scope=scope, **data)
        return Response(instance_output(instance), status=201)


class InstanceMixin:
    def _get(self, instance_id: str) -> OrchestratorInstance:
        """By UUID or slug, as conversations name their orchestrator. One the caller may not
        see is the same 404 as one that does not exist."""
        instances = scoped(
            OrchestratorInstance.objects.select_related("llm_config"), self.scope(self.request)
        )
        try:
            lookup = {"pk": uuid.UUID(instance_id)}
        except ValueError:
            lookup = {"slug": instance_id}
        instance = instances.filter(**lookup).first()
        if instance is None:
            raise NotFoundError("No such orchestrator.")
        return instance


class InstanceDetailApi(InstanceMixin, OrgMemberApi):
    required_role = Role.MEMBER

    @extend_schema(summary="One orchestrator", responses={200: InstanceOutput})
    def get(self, request, org_slug, instance_id):
        return Response(instance_output(self._get(instance_id)))

    @extend_schema(
        summary="Change an orchestrator",
        description="A change is validated, then rebuilt in the background on every process.",
        request=InstanceInput,
        responses={200: InstanceOutput},
    )
    def patch(self, request, org_slug, instance_id):
        scope = self.scope(request)
        instance = self._get(instance_id)
        data = _resolve_llm(dict(self.validated(InstanceInput, request.data, partial=True)), scope)
        return Response(
            instance_output(
                services.orchestrator_update(
                    instance=instance, actor=self.actor(request), scope=scope, **data
                )
            )
        )

    @extend_schema(summary="Delete an orchestrator", responses={204: None})
    def delete(self, request, org_slug, instance_id):
        services.orchestrator_delete(
            instance=self._get(instance_id), actor=self.actor(request), scope=self.scope(request)
        )
        return Response(status=204)


class InstanceActionApi(InstanceMixin, OrgMemberApi):
    required_role = Role.MEMBER
    action = ""

    @extend_schema(
        summary="Activate, suspend or rebuild an orchestrator",
        description="`activate` and `rebuild` answer 202 and build in the background; "
        "`suspend` takes effect at once (200).",
        request=None,
        responses={200: InstanceOutput, 202: InstanceOutput},
    )
    def post(self, request, org_slug, instance_id):
        instance = self._get(instance_id)
        handler = {
            "activate": services.orchestrator_activate,
            "suspend": services.orchestrator_suspend,
            "rebuild": services.orchestrator_rebuild,
        }[self.action]
        return Response(
            instance_output(
                handler(instance=instance, actor=self.actor(request), scope=self.scope(request))
            ),
            status=202 if self.action != "suspend" else 200,
        )


class InstanceDiagramApi(InstanceMixin, OrgMemberApi):
    @extend_schema(
        summary="The orchestrator's flow as a Mermaid diagram", responses={200: DiagramOutput}
    )
    def get(self, request, org_slug, instance_id):
        from orchestrators.diagrams import instance_mermaid

        return Response({"format": "mermaid", "diagram": instance_mermaid(self._get(instance_id))})


class InvokeInput(StrictSerializer):
    class MessageInput(StrictSerializer):
        role = serializers.ChoiceField(choices=["user", "assistant", "system"])
        content = serializers.CharField(
            max_length=MAX_CONTENT, allow_blank=True, trim_whitespace=False
        )

    messages = serializers.ListField(child=MessageInput(), min_length=1, max_length=MAX_MESSAGES)


def _run_owner(principal) -> dict:
    key = getattr(principal, "api_key", None)
    if key is not None:
        return {"owner_api_key_id": str(key.pk)}
    return {"owner_user_id": principal.pk}


class InstanceInvokeApi(InstanceMixin, OrgMemberApi):
    """One turn for integrations: the conversation in, the final assistant message out."""

    read_role = Role.MEMBER
    required_role = Role.MEMBER

    @extend_schema(
        summary="One turn: the conversation in, the assistant's reply out",
        request=InvokeInput,
        responses={200: InvokeOutput, 502: None, 504: None},
    )
    def post(self, request, org_slug, instance_id):
        from orchestrators.invoke import invoke

        data = self.validated(InvokeInput, request.data)
        # By the id the path's slug or UUID resolves to now: the pool caches slugs per process.
        instance = self._get(instance_id)
        require_level(
            self.scope(request), kind="orchestrator", obj=instance, level="use", what="orchestrator"
        )
        messages = [dict(m) for m in data["messages"]]
        if messages[-1]["role"] != "user":
            raise ApplicationError(
                "The last message must come from the user.",
                "invalid_messages",
                {"field": "messages"},
            )
        result = async_to_sync(invoke)(
            org=request.org,
            # The resolved id, not the slug the path may carry: a slug can be reused by a newer
            # instance, an id cannot.
            ref=str(instance.id),
            history=messages[:-1],
            message=messages[-1]["content"],
            user=str(request.user),
            **_run_owner(request.user),
        )
        return Response(result)
