"""Per-organization overrides of a plan, per-key limits, and daily usage (the system of record)."""

from __future__ import annotations

import uuid

from django.core.validators import MinValueValidator
from django.db import models

# Which limits an organization override and an API key may set. Empty means "inherit".
RATE_FIELDS = ("requests_per_minute", "request_burst")
TOKEN_FIELDS = ("tokens_per_minute", "tokens_per_day", "tokens_per_month")
QUOTA_FIELDS = (
    "max_orchestrators",
    "max_members",
    "max_api_keys",
    "max_plugins",
    "max_storage_bytes",
)
ORG_FIELDS = (
    *RATE_FIELDS,
    *TOKEN_FIELDS,
    "concurrent_streams",
    *QUOTA_FIELDS,
    "run_retention_days",
)
KEY_FIELDS = (*RATE_FIELDS, *TOKEN_FIELDS, "concurrent_streams")


def _positive(**kwargs):
    return models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], **kwargs
    )


def _budget(**kwargs):
    return models.PositiveBigIntegerField(null=True, blank=True, **kwargs)


def _non_negative_checks(prefix: str, fields: tuple[str, ...]) -> list[models.CheckConstraint]:
    return [
        models.CheckConstraint(
            condition=models.Q(**{f"{name}__isnull": True}) | models.Q(**{f"{name}__gte": 0}),
            name=f"{prefix}_{name}_non_negative",
        )
        for name in fields
    ]


class OrganizationLimits(models.Model):
    """An operator's exceptions to an organization's plan: each empty field inherits the plan's."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.OneToOneField(
        "tenants.Organization", on_delete=models.CASCADE, related_name="limit_overrides"
    )
    requests_per_minute = _positive()
    request_burst = _positive()
    tokens_per_minute = _budget()
    tokens_per_day = _budget()
    tokens_per_month = _budget()
    concurrent_streams = _positive()
    max_orchestrators = models.PositiveIntegerField(null=True, blank=True)
    max_members = _positive()
    max_api_keys = _positive()
    max_plugins = models.PositiveIntegerField(null=True, blank=True)
    max_storage_bytes = _budget()
    run_retention_days = _positive()
    note = models.CharField(max_length=200, blank=True, help_text="Why this organization differs.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization__slug"]
        verbose_name = "organization limit override"
        constraints = _non_negative_checks("orglimits", ORG_FIELDS)

    def __str__(self) -> str:
        return f"overrides for {self.organization}"


class ApiKeyLimits(models.Model):
    """Limits of one API key, within its organization's: both apply to every call the key makes."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    api_key = models.OneToOneField(
        "tenants.ApiKey", on_delete=models.CASCADE, related_name="limits"
    )
    requests_per_minute = _positive()
    request_burst = _positive()
    tokens_per_minute = _budget()
    tokens_per_day = _budget()
    tokens_per_month = _budget()
    concurrent_streams = _positive()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key limits"
        verbose_name_plural = "API key limits"
        constraints = _non_negative_checks("keylimits", KEY_FIELDS)

    def __str__(self) -> str:
        return f"limits for {self.api_key_id}"


class UsageDay(models.Model):
    """Requests and tokens per organization, principal, orchestrator, model and UTC day.

    Rows are incremented in place (INSERT … ON CONFLICT DO UPDATE, tenants/limits/usage.py), so
    concurrent settlements add up without a lock. Dimensions are never NULL ("" when absent): the
    unique constraint must see two "no orchestrator" rows as the same row.
    """

    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.CASCADE, related_name="usage_days"
    )
    day = models.DateField()
    # "key:<prefix>" or "user:<id>": who made the calls; the key id is kept for joins.
    principal = models.CharField(max_length=64)
    api_key = models.ForeignKey(
        "tenants.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    orchestrator = models.CharField(max_length=100, default="", blank=True)
    model = models.CharField(max_length=200, default="", blank=True)
    requests = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    # The part of total_tokens counted by Cadence because the provider's figure never came.
    estimated_tokens = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-day", "organization_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "day", "principal", "orchestrator", "model"],
                name="usageday_dimensions_unique",
            )
        ]
        indexes = [models.Index(fields=["organization", "day"], name="usageday_org_day")]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.day} {self.principal} {self.orchestrator}"
