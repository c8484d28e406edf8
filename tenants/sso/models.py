from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from tenants.models import Organization
from tenants.roles import Role

# Roles a provider's claim may grant. Owner is granted by people only: an identity provider
# that an admin configures must not be able to mint owners.
MAPPABLE_ROLES = (Role.ADMIN, Role.MEMBER, Role.VIEWER)
MAPPABLE_ROLE_CHOICES = [(r.value, r.label) for r in MAPPABLE_ROLES]


class SsoProvider(models.Model):
    """An organization's OpenID Connect provider: at most one per organization.

    The client secret is stored encrypted (orchestrators/crypto.py, the LLM keys' Fernet) and
    never returned; `client_secret_hint` is what people see of it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="sso_provider"
    )
    issuer = models.CharField(max_length=500)
    client_id = models.CharField("client ID", max_length=255)
    client_secret_encrypted = models.TextField(blank=True)
    client_secret_hint = models.CharField(max_length=16, blank=True)
    scopes = models.CharField(max_length=300, default="openid email profile")
    # Lower-case domain names; an email outside them is refused.
    allowed_domains = models.JSONField(default=list)
    # The claim whose values (a string or a list of strings) pick entries of `mapping`.
    claim = models.CharField(max_length=100, blank=True)
    # {"claim value": {"role": "member", "team": "<team uuid>" | null}}
    mapping = models.JSONField(default=dict, blank=True)
    default_role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    sso_required = models.BooleanField("SSO required", default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization__slug"]
        verbose_name = "single sign-on provider"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(default_role__in=[r.value for r in MAPPABLE_ROLES]),
                name="sso_provider_default_role_mappable",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization} → {self.issuer}"


class SsoLoginState(models.Model):
    """One sign-in under way: state, nonce and PKCE verifier kept server-side, used once.

    The state travels through the browser; only its SHA-256 is stored. `browser_hash` binds the
    sign-in to the browser that started it (a cookie), so a callback URL sent to someone else
    signs nobody in.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    state_hash = models.CharField(max_length=64, unique=True)
    browser_hash = models.CharField(max_length=64)
    nonce = models.CharField(max_length=100)
    code_verifier = models.CharField(max_length=128)
    next_path = models.CharField(max_length=500, blank=True)
    expires_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]


class SsoIdentity(models.Model):
    """The account an organization's provider's subject signs in as: later sign-ins follow this
    link, not the email, so a changed address at the provider still reaches the same account."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="sso_identities"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identities"
    )
    issuer = models.CharField(max_length=500)
    subject = models.CharField(max_length=255)
    email = models.EmailField(max_length=254)
    last_login_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-last_login_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "issuer", "subject"], name="sso_identity_unique_subject"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject} @ {self.issuer} → user {self.user_id}"
