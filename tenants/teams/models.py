from __future__ import annotations

import uuid

from django.db import models


class TeamRole(models.TextChoices):
    MAINTAINER = "maintainer", "Maintainer"
    MEMBER = "member", "Member"


class Team(models.Model):
    """A group of an organization's members; lives in the organization's own schema."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=50)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["slug"], name="team_slug_unique")]

    def __str__(self) -> str:
        return self.name


class TeamMembership(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    # Users live in the public schema: a plain id, as chat keeps its owners. Whether the user is
    # still a member of the organization is checked on every read (selectors), not trusted here.
    user_id = models.BigIntegerField(db_index=True)
    role = models.CharField(max_length=16, choices=TeamRole.choices, default=TeamRole.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team__name", "user_id"]
        constraints = [
            models.UniqueConstraint(fields=["team", "user_id"], name="team_membership_unique"),
            models.CheckConstraint(
                condition=models.Q(role__in=[r.value for r in TeamRole]),
                name="team_membership_role_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"user {self.user_id} in {self.team} ({self.role})"


class ShareLevel(models.TextChoices):
    """What a team a resource is shared with may do with it (each level includes the ones above)."""

    READ = "read", "Read"
    USE = "use", "Use"
    MANAGE = "manage", "Manage"


LEVEL_RANK = {ShareLevel.READ: 1, ShareLevel.USE: 2, ShareLevel.MANAGE: 3}


class _Share(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    level = models.CharField(max_length=8, choices=ShareLevel.choices, default=ShareLevel.USE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class OrchestratorShare(_Share):
    """An orchestrator (and, with it, its plugin settings) shared with a team other than its own."""

    orchestrator = models.ForeignKey(
        "orchestrators.OrchestratorInstance", on_delete=models.CASCADE, related_name="shares"
    )

    class Meta:
        ordering = ["orchestrator", "team"]
        constraints = [
            models.UniqueConstraint(fields=["orchestrator", "team"], name="orch_share_unique"),
            models.CheckConstraint(
                condition=models.Q(level__in=[lv.value for lv in ShareLevel]),
                name="orch_share_level_valid",
            ),
        ]


class LLMConfigShare(_Share):
    """An LLM configuration shared with another team: `use` lets that team's orchestrators run
    on it (its key stays write-only either way)."""

    llm_config = models.ForeignKey(
        "orchestrators.LLMConfig", on_delete=models.CASCADE, related_name="shares"
    )

    class Meta:
        ordering = ["llm_config", "team"]
        constraints = [
            models.UniqueConstraint(fields=["llm_config", "team"], name="llm_share_unique"),
            models.CheckConstraint(
                condition=models.Q(level__in=[lv.value for lv in ShareLevel]),
                name="llm_share_level_valid",
            ),
        ]
