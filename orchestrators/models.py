from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

SLUG_RE = r"^[a-z0-9][a-z0-9-]{0,62}$"


class LLMConfig(models.Model):
    """A model endpoint an organization brings (BYOK). The key is stored encrypted, never returned."""

    class Provider(models.TextChoices):
        OPENAI_COMPATIBLE = (
            "openai_compatible",
            "OpenAI-compatible (OpenAI, Azure, Ollama, vLLM, llama.cpp)",
        )
        OFFLINE = "offline", "Offline demo provider (deterministic, no network)"
        ANTHROPIC = "anthropic", "Anthropic (optional extra)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    provider = models.CharField(
        max_length=32, choices=Provider.choices, default=Provider.OPENAI_COMPATIBLE
    )
    base_url = models.URLField(max_length=500, blank=True)
    model = models.CharField(max_length=200)
    api_key_encrypted = models.TextField(blank=True, editable=False)
    api_key_hint = models.CharField(max_length=20, blank=True, editable=False)
    temperature = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(2)]
    )
    max_tokens = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(1_000_000)]
    )
    timeout_seconds = models.FloatField(
        default=60, validators=[MinValueValidator(1), MaxValueValidator(600)]
    )
    max_retries = models.PositiveSmallIntegerField(default=2, validators=[MaxValueValidator(10)])
    # The team it belongs to; null: the whole organization's (tenants/teams/scoping.py).
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "LLM configuration"

    def __str__(self) -> str:
        return self.name


class OrchestratorInstance(models.Model):
    class Framework(models.TextChoices):
        CADENCE = "cadence", "Cadence engine (native)"
        LANGGRAPH = "langgraph", "LangGraph"
        OPENAI_AGENTS = "openai_agents", "OpenAI Agents SDK"

    class Tier(models.TextChoices):
        HOT = "hot", "Hot (built at start-up)"
        WARM = "warm", "Warm (built on first use, kept)"
        COLD = "cold", "Cold (built per request)"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        SUSPENDED = "suspended", "Suspended"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.CharField(
        max_length=63,
        unique=True,
        validators=[RegexValidator(SLUG_RE, "Lowercase letters, digits and hyphens.")],
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    framework = models.CharField(
        max_length=32, choices=Framework.choices, default=Framework.CADENCE
    )
    flow = models.JSONField(default=dict, blank=True)
    system_prompt = models.TextField(blank=True, default="You are a helpful assistant.")
    llm_config = models.ForeignKey(
        LLMConfig, null=True, blank=True, on_delete=models.PROTECT, related_name="orchestrators"
    )
    tools = models.JSONField(default=list, blank=True)
    # [{"id", "version" (a range), "settings", "secrets" (encrypted)}] and what resolution chose;
    # both managed by plugins.binding.
    plugins = models.JSONField(default=list, blank=True)
    plugin_lock = models.JSONField(default=dict, blank=True, editable=False)
    max_steps = models.PositiveSmallIntegerField(
        default=8, validators=[MinValueValidator(1), MaxValueValidator(50)]
    )
    tier = models.CharField(max_length=8, choices=Tier.choices, default=Tier.WARM)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    status_message = models.TextField(blank=True)
    config_hash = models.CharField(max_length=64, blank=True)
    # A build is claimed with a lease (orchestrators/tasks.py): a worker that dies mid-build
    # leaves an expired lease, and the sweeper hands the build to another worker.
    build_lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    build_owner = models.CharField(max_length=200, blank=True, editable=False)
    version = models.PositiveIntegerField(default=1)
    # The team it belongs to; null: the whole organization's (tenants/teams/scoping.py).
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        verbose_name = "orchestrator instance"

    def __str__(self) -> str:
        return self.slug
