"""Writes for LLM configurations and orchestrator instances, validated before anything is saved.

Every change commits first, then a Celery task builds the instance and announces it to every
process (orchestrators/lifecycle.py). Validation is fail-fast: a bad flow, an unknown tool, a
missing LLM configuration or an uninstalled framework is a 400 naming the field, never a failure
at chat time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from django.db import connection, transaction
from django.db.models import ProtectedError

from cadence_site.errors import ApplicationError
from orchestrators import crypto
from orchestrators.models import LLMConfig, OrchestratorInstance
from orchestrators.runtime import LLMSettings, RuntimeConfig
from tenants.audit.changes import audit_change
from tenants.teams.scoping import TeamScope, require_create_in, require_level

logger = logging.getLogger(__name__)

DEFAULT_BASE_URLS = {LLMConfig.Provider.OPENAI_COMPATIBLE: "https://api.openai.com/v1"}
LLM_FIELDS = (
    "name",
    "provider",
    "base_url",
    "model",
    "temperature",
    "max_tokens",
    "timeout_seconds",
    "max_retries",
)
INSTANCE_FIELDS = (
    "slug",
    "name",
    "description",
    "framework",
    "flow",
    "system_prompt",
    "llm_config",
    "tools",
    "plugins",
    "max_steps",
    "tier",
)


def llm_config_snapshot(config: LLMConfig) -> dict[str, Any]:
    """What the audit trail keeps of a configuration: its fields and the key's hint, never the key."""
    return {
        **{name: getattr(config, name) for name in LLM_FIELDS},
        "api_key_hint": config.api_key_hint,
        "team": str(config.team_id) if config.team_id else None,
    }


def instance_snapshot(instance: OrchestratorInstance) -> dict[str, Any]:
    data = {name: getattr(instance, name) for name in INSTANCE_FIELDS if name != "llm_config"}
    data["llm_config"] = str(instance.llm_config_id) if instance.llm_config_id else None
    data["status"] = instance.status
    data["version"] = instance.version
    data["team"] = str(instance.team_id) if instance.team_id else None
    return data


def _invalid(field: str, message: str, code: str = "invalid") -> ApplicationError:
    return ApplicationError(message, code, {"field": field})


# --- LLM configurations -----------------------------------------------------------------------


# llm_config_create and llm_config_update leave what validate_llm warned about on the returned
# configuration as `save_warnings` (a list of messages, not stored) for the API and the admin.


def validate_llm(config: LLMConfig) -> list[str]:
    """Refuse what can never work (a 400 naming the field); the warnings for what may work later.

    A base URL whose host does not resolve right now (a laptop offline, a DNS name not created
    yet) is saved with a warning: the egress policy checks it again at every call.
    """
    from orchestrators.llm import provider_available

    if config.provider not in LLMConfig.Provider.values:
        raise _invalid("provider", f"Unknown provider {config.provider!r}.")
    if not provider_available(config.provider):
        raise _invalid(
            "provider",
            f"The {config.provider} provider's package is not installed on this server.",
            "provider_not_installed",
        )
    if not config.model.strip():
        raise _invalid("model", "A model name is required.")
    if config.provider == LLMConfig.Provider.OFFLINE:
        return []
    if not config.base_url:
        config.base_url = DEFAULT_BASE_URLS.get(config.provider, "")
    if config.base_url:
        from cadence_site.outbound import UNRESOLVABLE, EgressDenied, check_url

        try:
            check_url(config.base_url)
        except EgressDenied as exc:
            if exc.extra.get("reason") == UNRESOLVABLE:
                return [f"{exc.message} It was saved anyway and is checked again at every call."]
            raise ApplicationError(
                exc.message, exc.code, {**exc.extra, "field": "base_url"}
            ) from None
        except ApplicationError as exc:
            raise ApplicationError(exc.message, exc.code, {"field": "base_url"}) from None
    return []


def _set_key(config: LLMConfig, api_key: str | None) -> None:
    if api_key is None:
        return
    config.api_key_encrypted = crypto.encrypt(api_key)
    config.api_key_hint = crypto.mask(api_key)


@transaction.atomic
def llm_config_create(
    *,
    name: str,
    provider: str,
    model: str,
    api_key: str = "",
    actor=None,
    team=None,
    scope: TeamScope | None = None,
    **fields: Any,
) -> LLMConfig:
    """`scope` is the caller's (None: a trusted caller, e.g. a command); `team` its team or None."""
    require_create_in(scope, team=team, what="LLM configuration")
    unknown = set(fields) - set(LLM_FIELDS)
    if unknown:
        raise ApplicationError(
            f"Unknown fields {sorted(unknown)}.", "unknown_field", {"fields": sorted(unknown)}
        )
    if LLMConfig.objects.filter(name=name).exists():
        raise _invalid("name", f"An LLM configuration named {name!r} already exists.", "name_taken")
    config = LLMConfig(name=name, provider=provider, model=model, team=team, **fields)
    warnings = validate_llm(config)
    _set_key(config, api_key)
    config.full_clean(exclude=["api_key_encrypted", "api_key_hint"])
    config.save()
    audit_change(
        action="llm_config.created",
        target=config.name,
        actor=actor,
        after=llm_config_snapshot(config),
    )
    config.save_warnings = warnings
    return config


def llm_config_update(
    *,
    config: LLMConfig,
    api_key: str | None = None,
    actor=None,
    scope: TeamScope | None = None,
    **fields: Any,
) -> LLMConfig:
    """`api_key=None` keeps the stored key; an empty string clears it. A `team` in `fields`
    moves the configuration (tenants/teams/scoping.py: manage it, and create in the new team)."""
    require_level(scope, kind="llm_config", obj=config, level="manage", what="LLM configuration")
    with transaction.atomic():
        if "team" in fields:
            team_assign(obj=config, team=fields.pop("team"), actor=actor, scope=scope)
        before = llm_config_snapshot(config)
        for name, value in fields.items():
            if name not in LLM_FIELDS:
                raise ApplicationError(f"Unknown field {name!r}.", "unknown_field", {"field": name})
            setattr(config, name, value)
        warnings = validate_llm(config)
        _set_key(config, api_key)
        config.full_clean(exclude=["api_key_encrypted", "api_key_hint"])
        config.save()
        after = llm_config_snapshot(config)
        if api_key is not None and before["api_key_hint"] == after["api_key_hint"]:
            # A new key with the same last characters is still a change worth recording.
            after["api_key_hint"] = f"{after['api_key_hint']} (replaced)" if api_key else ""
        audit_change(
            action="llm_config.updated", target=config.name, actor=actor, before=before, after=after
        )
        config.save_warnings = warnings
        dependants = list(
            config.orchestrators.exclude(status=OrchestratorInstance.Status.SUSPENDED)
        )
        for instance in dependants:
            _mark_building(instance)
    for instance in dependants:
        _schedule_build(instance)
    return config


def llm_config_delete(*, config: LLMConfig, actor=None, scope: TeamScope | None = None) -> None:
    require_level(scope, kind="llm_config", obj=config, level="manage", what="LLM configuration")
    before = llm_config_snapshot(config)
    try:
        with transaction.atomic():
            config.delete()
            audit_change(
                action="llm_config.deleted", target=before["name"], actor=actor, before=before
            )
    except ProtectedError:
        names = sorted(config.orchestrators.values_list("slug", flat=True))
        raise ApplicationError(
            f"In use by orchestrators: {', '.join(names)}.", "in_use", {"orchestrators": names}
        ) from None


def llm_settings(config: LLMConfig) -> LLMSettings:
    return LLMSettings(
        provider=config.provider,
        model=config.model,
        base_url=config.base_url,
        api_key=crypto.decrypt(config.api_key_encrypted),
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        timeout=config.timeout_seconds,
        max_retries=config.max_retries,
        config_id=f"{connection.schema_name}:{config.id}",
    )


# --- orchestrator instances -------------------------------------------------------------------


def _tool_registry():
    from orchestrators.tools import builtin_tools

    return builtin_tools


def instance_validate(instance: OrchestratorInstance) -> None:
    """Every check a build would fail on, as a 400 naming the field."""
    from engine.flow import FlowValidationError, check_flow
    from orchestrators.adapters import FRAMEWORKS, INSTALL_HINT, framework_available
    from orchestrators.adapters.cadence import DEFAULT_FLOW, agent_notes

    if instance.framework not in FRAMEWORKS:
        raise _invalid(
            "framework",
            f"Unknown framework {instance.framework!r}; choose one of {', '.join(FRAMEWORKS)}.",
        )
    if not framework_available(instance.framework):
        raise _invalid(
            "framework",
            f"The {instance.framework} framework is not installed on this server. {INSTALL_HINT}",
            "framework_not_installed",
        )
    if instance.llm_config_id is None:
        raise _invalid("llm_config", "An LLM configuration is required.", "llm_config_required")
    if not isinstance(instance.tools, list) or not all(isinstance(t, str) for t in instance.tools):
        raise _invalid("tools", "tools must be a list of tool names.")
    from plugins.mcp import PREFIX as MCP_PREFIX
    from plugins.mcp import mcp_refs_check

    known = set(_tool_registry().names())
    unknown = [t for t in instance.tools if t not in known and not t.startswith(MCP_PREFIX)]
    if unknown:
        raise ApplicationError(
            f"Unknown tools: {', '.join(unknown)}. Available: {', '.join(sorted(known))}.",
            "unknown_tool",
            {"field": "tools", "unknown": unknown},
        )
    if len(set(instance.tools)) != len(instance.tools):
        raise _invalid("tools", "A tool is listed twice.")
    mcp_refs_check(instance)
    from plugins.binding import plugin_set_check
    from plugins.notes import expand_prompt

    plugin_set_check(instance)
    expand_prompt(instance)  # a {{plugin:…}} template must come from the plugin set
    if instance.framework == OrchestratorInstance.Framework.CADENCE:
        if not instance.flow:
            instance.flow = DEFAULT_FLOW
        from plugins.binding import plugin_notes
        from plugins.notes import plugin_flow

        try:
            check_flow(plugin_flow(instance) or instance.flow, agent_notes(plugin_notes(instance)))
        except FlowValidationError as exc:
            issues = [
                {"path": issue.path, "message": issue.message, "code": issue.code}
                for issue in exc.issues
            ]
            raise ApplicationError(
                f"The flow is invalid: {issues[0]['path']}: {issues[0]['message']}",
                "invalid_flow",
                {"field": "flow", "issues": issues},
            ) from None
    else:
        if instance.flow:
            raise _invalid(
                "flow", f"A flow applies to the cadence framework only, not {instance.framework}."
            )
        # LangGraph and the Agents SDK bring their own OpenAI client: an OpenAI-compatible endpoint only.
        if instance.llm_config.provider != LLMConfig.Provider.OPENAI_COMPATIBLE:
            raise _invalid(
                "llm_config",
                f"The {instance.framework} framework needs an openai_compatible LLM configuration, not {instance.llm_config.provider}.",
                "provider_not_supported",
            )


def _set_plugins(instance: OrchestratorInstance, entries: Any) -> None:
    from plugins.binding import plugin_set_prepare

    instance.plugins, instance.plugin_lock = plugin_set_prepare(
        entries=entries, existing=instance.plugins
    )


def config_hash(instance: OrchestratorInstance) -> str:
    """Changes whenever anything a runtime is built from changes; equal hashes are the same runtime."""
    from engine.flow import flow_hash
    from plugins.binding import plugin_material
    from plugins.mcp import mcp_material

    llm = instance.llm_config
    material = {
        "framework": instance.framework,
        "flow": flow_hash(instance.flow) if instance.flow else "",
        "system_prompt": instance.system_prompt,
        "tools": instance.tools,
        "max_steps": instance.max_steps,
        "plugins": plugin_material(instance),
        "mcp": mcp_material(instance),
        "llm": [llm.id.hex, llm.updated_at.isoformat(), llm.provider, llm.base_url, llm.model]
        if llm
        else None,
    }
    return hashlib.sha256(
        json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def runtime_config(instance: OrchestratorInstance, *, org_slug: str) -> RuntimeConfig:
    from plugins.binding import plugin_notes, plugin_secrets, plugin_tools
    from plugins.mcp import PREFIX as MCP_PREFIX
    from plugins.mcp import mcp_tools
    from plugins.notes import expand_prompt, plugin_flow

    registry = _tool_registry()
    tools = [registry.get(name) for name in instance.tools if not name.startswith(MCP_PREFIX)]
    tools += plugin_tools(instance, taken={tool.name for tool in tools})
    tools += mcp_tools(instance, taken={tool.name for tool in tools})
    return RuntimeConfig(
        org_slug=org_slug,
        instance_id=str(instance.id),
        slug=instance.slug,
        framework=instance.framework,
        flow=plugin_flow(instance) or instance.flow,
        system_prompt=expand_prompt(instance),
        llm=llm_settings(instance.llm_config),
        tools=tuple(tools),
        notes=plugin_notes(instance),
        max_steps=instance.max_steps,
        config_hash=instance.config_hash or config_hash(instance),
        secrets=plugin_secrets(instance),
    )


def _mark_building(instance: OrchestratorInstance) -> None:
    instance.status = OrchestratorInstance.Status.BUILDING
    instance.status_message = ""
    instance.config_hash = config_hash(instance)
    # A new build is free to be claimed at once, whatever lease the previous one left.
    instance.build_lease_until, instance.build_owner = None, ""
    instance.save(
        update_fields=[
            "status",
            "status_message",
            "config_hash",
            "build_lease_until",
            "build_owner",
            "updated_at",
        ]
    )


def _schedule_build(instance: OrchestratorInstance) -> None:
    from orchestrators.tasks import orchestrator_build

    schema, instance_id, digest = connection.schema_name, str(instance.id), instance.config_hash
    transaction.on_commit(lambda: orchestrator_build.delay(schema, instance_id, digest))


def orchestrator_create(
    *, actor=None, team=None, scope: TeamScope | None = None, **fields: Any
) -> OrchestratorInstance:
    """In the organization's schema; the plan's max_orchestrators holds under concurrency.
    `scope` is the caller's (None: a trusted caller); `team` the new orchestrator's or None."""
    from tenants.limits.quotas import current_org_id, quota_enforce

    require_create_in(scope, team=team, what="orchestrator")
    unknown = set(fields) - set(INSTANCE_FIELDS)
    if unknown:
        raise ApplicationError(
            f"Unknown fields {sorted(unknown)}.", "unknown_field", {"fields": sorted(unknown)}
        )
    with transaction.atomic():
        org_id = current_org_id()
        if org_id is not None:
            quota_enforce(
                org_id=org_id,
                quota="max_orchestrators",
                count=OrchestratorInstance.objects.count,
            )
        if OrchestratorInstance.objects.filter(slug=fields.get("slug")).exists():
            raise _invalid(
                "slug",
                f"An orchestrator with slug {fields.get('slug')!r} already exists.",
                "slug_taken",
            )
        entries = fields.pop("plugins", None)
        instance = OrchestratorInstance(team=team, **fields)
        llm_config_check_for(instance)
        if entries is not None:
            _set_plugins(instance, entries)
        instance.full_clean(exclude=["llm_config", "flow", "tools", "plugins", "plugin_lock"])
        instance_validate(instance)
        instance.status = OrchestratorInstance.Status.BUILDING
        instance.config_hash = config_hash(instance)
        instance.save()
        audit_change(
            action="orchestrator.created",
            target=instance.slug,
            actor=actor,
            after=instance_snapshot(instance),
        )
        _schedule_build(instance)
    return instance


def orchestrator_update(
    *, instance: OrchestratorInstance, actor=None, scope: TeamScope | None = None, **fields: Any
) -> OrchestratorInstance:
    require_level(scope, kind="orchestrator", obj=instance, level="manage", what="orchestrator")
    with transaction.atomic():
        if "team" in fields:
            team_assign(obj=instance, team=fields.pop("team"), actor=actor, scope=scope)
        before = instance_snapshot(OrchestratorInstance.objects.get(pk=instance.pk))
        for name, value in fields.items():
            if name not in INSTANCE_FIELDS:
                raise ApplicationError(f"Unknown field {name!r}.", "unknown_field", {"field": name})
            if name == "plugins":
                _set_plugins(instance, value)
            else:
                setattr(instance, name, value)
        instance.full_clean(
            exclude=["llm_config", "flow", "tools", "plugins", "plugin_lock"], validate_unique=False
        )
        if (
            "slug" in fields
            and OrchestratorInstance.objects.filter(slug=instance.slug)
            .exclude(pk=instance.pk)
            .exists()
        ):
            raise _invalid(
                "slug", f"An orchestrator with slug {instance.slug!r} already exists.", "slug_taken"
            )
        instance_validate(instance)
        llm_config_check_for(instance)
        instance.version += 1
        suspended = instance.status == OrchestratorInstance.Status.SUSPENDED
        instance.config_hash = config_hash(instance)
        if not suspended:
            instance.status, instance.status_message = OrchestratorInstance.Status.BUILDING, ""
            instance.build_lease_until, instance.build_owner = None, ""
        instance.save()
        audit_change(
            action="orchestrator.updated",
            target=instance.slug,
            actor=actor,
            before=before,
            after=instance_snapshot(instance),
        )
        if not suspended:
            _schedule_build(instance)
    return instance


def orchestrator_activate(
    *, instance: OrchestratorInstance, actor=None, scope: TeamScope | None = None
) -> OrchestratorInstance:
    require_level(scope, kind="orchestrator", obj=instance, level="manage", what="orchestrator")
    with transaction.atomic():
        instance_validate(instance)
        before = instance.status
        _mark_building(instance)
        audit_change(
            action="orchestrator.rebuilt",
            target=instance.slug,
            actor=actor,
            before={"status": before},
            after={"status": instance.status},
        )
        _schedule_build(instance)
    return instance


orchestrator_rebuild = orchestrator_activate


def orchestrator_suspend(
    *, instance: OrchestratorInstance, actor=None, scope: TeamScope | None = None
) -> OrchestratorInstance:
    from orchestrators import lifecycle

    require_level(scope, kind="orchestrator", obj=instance, level="manage", what="orchestrator")
    with transaction.atomic():
        audit_change(
            action="orchestrator.suspended",
            target=instance.slug,
            actor=actor,
            before={"status": instance.status},
            after={"status": OrchestratorInstance.Status.SUSPENDED},
        )
        OrchestratorInstance.objects.filter(pk=instance.pk).update(
            status=OrchestratorInstance.Status.SUSPENDED,
            status_message="Suspended by an administrator.",
        )
        instance.refresh_from_db()
        schema, instance_id = connection.schema_name, str(instance.id)
        transaction.on_commit(
            lambda: lifecycle.announce(
                schema_name=schema, instance_id=instance_id, config_hash="", action=lifecycle.DROP
            )
        )
    return instance


def orchestrator_delete(
    *, instance: OrchestratorInstance, actor=None, scope: TeamScope | None = None
) -> None:
    from orchestrators import lifecycle

    require_level(scope, kind="orchestrator", obj=instance, level="manage", what="orchestrator")
    with transaction.atomic():
        schema, instance_id = connection.schema_name, str(instance.id)
        audit_change(
            action="orchestrator.deleted",
            target=instance.slug,
            actor=actor,
            before=instance_snapshot(instance),
        )
        instance.delete()
        transaction.on_commit(
            lambda: lifecycle.announce(
                schema_name=schema, instance_id=instance_id, config_hash="", action=lifecycle.DROP
            )
        )


# --- teams ------------------------------------------------------------------------------------


def llm_config_usable_by_team(config: LLMConfig, team_id) -> bool:
    """An orchestrator runs on an organization-wide configuration, its own team's, or one shared
    with its team to use: a team's LLM key never serves another team's orchestrators unasked."""
    from tenants.teams.models import LLMConfigShare, ShareLevel

    if config.team_id is None or config.team_id == team_id:
        return True
    return (
        team_id is not None
        and LLMConfigShare.objects.filter(
            llm_config_id=config.pk,
            team_id=team_id,
            level__in=[ShareLevel.USE, ShareLevel.MANAGE],
        ).exists()
    )


def llm_config_check_for(instance: OrchestratorInstance) -> None:
    config = instance.llm_config
    if config is not None and not llm_config_usable_by_team(config, instance.team_id):
        raise _invalid(
            "llm_config",
            f"The LLM configuration {config.name!r} belongs to another team and is not shared "
            "with this orchestrator's team to use.",
            "llm_config_not_shared",
        )


def _team_label(team_id) -> str | None:
    from tenants.teams.models import Team

    if team_id is None:
        return None
    return Team.objects.filter(pk=team_id).values_list("slug", flat=True).first() or str(team_id)


def team_assign(*, obj, team, actor=None, scope: TeamScope | None = None) -> None:
    """Moves an orchestrator or an LLM configuration to `team` (None: the whole organization),
    audited as `<kind>.team_changed`. Inside the caller's transaction. An orchestrator's
    conversations follow it; its runs keep the team they ran in."""
    from chat.models import Conversation

    is_instance = isinstance(obj, OrchestratorInstance)
    what = "orchestrator" if is_instance else "LLM configuration"
    new_id = team.pk if team is not None else None
    if new_id == obj.team_id:
        return
    require_create_in(scope, team=team, what=what)
    before_id = obj.team_id
    obj.team = team
    if is_instance:
        if obj.llm_config_id is not None:
            llm_config_check_for(obj)
        OrchestratorInstance.objects.filter(pk=obj.pk).update(team=team)
        Conversation.objects.filter(orchestrator_id=obj.pk).update(team=team)
    else:
        stranded = sorted(
            i.slug for i in obj.orchestrators.all() if not llm_config_usable_by_team(obj, i.team_id)
        )
        if stranded:
            raise ApplicationError(
                f"Orchestrators of other teams run on it: {', '.join(stranded)}. Share it with "
                "their teams to use, or move them first.",
                "in_use",
                {"field": "team", "orchestrators": stranded},
                status=409,
            )
        LLMConfig.objects.filter(pk=obj.pk).update(team=team)
    audit_change(
        action=f"{'orchestrator' if is_instance else 'llm_config'}.team_changed",
        target=obj.slug if is_instance else obj.name,
        actor=actor,
        before={"team": _team_label(before_id)},
        after={"team": _team_label(new_id)},
    )
