"""Alert rules of an organization and the history of what they fired (tenant schema)."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from tenants.teams.models import ShareLevel, _Share

# Kinds evaluated when a run ends (about that run) and kinds over a window of runs.
RUN_KINDS = ("run_failed", "step_failed", "log_match", "slow_run", "slow_step", "drift")
WINDOW_KINDS = ("failure_rate", "tokens_over")


class AlertRule(models.Model):
    class Kind(models.TextChoices):
        RUN_FAILED = "run_failed", "A run failed"
        STEP_FAILED = "step_failed", "A step failed"
        LOG_MATCH = "log_match", "A log line matches a pattern"
        SLOW_RUN = "slow_run", "A run was slower than N ms"
        SLOW_STEP = "slow_step", "A step was slower than N ms"
        FAILURE_RATE = "failure_rate", "Failure rate over a window"
        TOKENS_OVER = "tokens_over", "Tokens over N in a window"
        DRIFT = "drift", "A run on an outdated definition"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    # Only runs of this orchestrator (its slug); empty: every orchestrator.
    orchestrator = models.CharField(max_length=63, blank=True)
    error_code = models.CharField(max_length=64, blank=True)  # run_failed, step_failed
    pattern = models.CharField(max_length=500, blank=True)  # log_match
    threshold_ms = models.PositiveIntegerField(null=True, blank=True)  # slow_run, slow_step
    window_seconds = models.PositiveIntegerField(null=True, blank=True)  # windowed kinds
    min_runs = models.PositiveIntegerField(null=True, blank=True)  # failure_rate
    failure_rate = models.FloatField(null=True, blank=True)  # failure_rate: 0 < rate <= 1
    tokens = models.PositiveBigIntegerField(null=True, blank=True)  # tokens_over
    webhook_url = models.CharField(max_length=2000, blank=True)
    # Fernet-encrypted (orchestrators/crypto.py); the plaintext is shown once, at creation.
    webhook_secret = models.TextField(blank=True)
    emails = models.JSONField(default=list, blank=True)
    # The team it belongs to; null: the whole organization's (tenants/teams/scoping.py). A
    # team's rule judges only the runs that team sees (engine/alerts/evaluate.py).
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=[*RUN_KINDS, *WINDOW_KINDS]), name="alertrule_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(failure_rate__isnull=True) | Q(failure_rate__gt=0, failure_rate__lte=1),
                name="alertrule_rate_valid",
            ),
            models.CheckConstraint(
                condition=~Q(webhook_url="") | ~Q(emails=[]), name="alertrule_has_target"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class AlertRuleShare(_Share):
    """A rule shared with a team other than its own: `read` (or `use`) shows the rule and the
    firings its members may read; `manage` lets that team's maintainers change it. What the rule
    judges stays its own team's runs."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="shares")

    class Meta:
        ordering = ["rule", "team"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "team"], name="alert_share_unique"),
            models.CheckConstraint(
                condition=models.Q(level__in=[lv.value for lv in ShareLevel]),
                name="alert_share_level_valid",
            ),
        ]


class AlertEvent(models.Model):
    """One firing of a rule: what caused it and how its notifications went. `key` makes firing
    idempotent: one event per rule and cause (a run, or a window's period)."""

    class Delivery(models.TextChoices):
        NONE = "none", "Not asked for"
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    key = models.CharField(max_length=100)
    # Not a foreign key: the history outlives a run that retention purges.
    run_id = models.UUIDField(null=True, blank=True, db_index=True)
    reason = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    webhook_status = models.CharField(
        max_length=16, choices=Delivery.choices, default=Delivery.NONE
    )
    webhook_attempts = models.PositiveIntegerField(default=0)
    webhook_error = models.TextField(blank=True)
    email_status = models.CharField(max_length=16, choices=Delivery.choices, default=Delivery.NONE)
    email_attempts = models.PositiveIntegerField(default=0)
    email_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "key"], name="alertevent_rule_key_unique")
        ]
        indexes = [models.Index(fields=["rule", "-created_at"], name="alertevent_rule_recent")]

    def __str__(self) -> str:
        return f"{self.rule_id} {self.key}"
