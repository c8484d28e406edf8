from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenants.models import ApiKey, Organization
from tenants.roles import Role
from tenants.teams.models import TeamRole


class Invitation(models.Model):
    """An offer, sent by email, to join an organization (and optionally one of its teams).

    The token is shown only in the email; the row keeps its SHA-256. A pending invitation is one
    neither accepted nor revoked; at most one is pending per address, organization and team, so a
    second invite is a resend, never a second live token.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField(max_length=254)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    # The team lives in the organization's schema: a plain id, checked when the invitation is used.
    team_id = models.UUIDField(null=True, blank=True)
    team_role = models.CharField(max_length=16, choices=TeamRole.choices, blank=True)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # An invitation sent with an API key names the key: its rights are read again at acceptance.
    invited_by_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    send_count = models.PositiveIntegerField(default=0)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "email", "team_id"],
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                nulls_distinct=False,
                name="invitation_one_pending_per_address",
            ),
            models.CheckConstraint(
                condition=models.Q(role__in=[r.value for r in Role]), name="invitation_role_valid"
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(team_id__isnull=True, team_role="")
                    | models.Q(team_id__isnull=False, team_role__in=[r.value for r in TeamRole])
                ),
                name="invitation_team_role_with_team",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email} → {self.organization} ({self.status})"

    @property
    def status(self) -> str:
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"
