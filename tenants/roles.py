"""Roles per organization, ordered: owner > admin > member > viewer."""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


RANK = {Role.VIEWER: 1, Role.MEMBER: 2, Role.ADMIN: 3, Role.OWNER: 4}


def role_at_least(role: str | None, required: str) -> bool:
    return role is not None and RANK[Role(role)] >= RANK[Role(required)]
