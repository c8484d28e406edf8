"""'SSO required': password login is refused for the members of an organization that turned it
on, with a message that names the organization's sign-in link.

Break-glass: platform staff (active `is_staff`) keep their password, so an operator can still get
in when an organization's provider is down or misconfigured; each such login is recorded in the
audit trail of every SSO-required organization they belong to. Organization owners get no
exception: their way back in past a broken provider is an operator.
"""

from __future__ import annotations

import re

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.db import transaction

from tenants.models import Organization
from tenants.services import audit_record
from tenants.sso.selectors import sso_login_path, sso_required_orgs_for_user


class SsoAwareAuthenticationForm(AuthenticationForm):
    error_messages = {
        **AuthenticationForm.error_messages,
        "sso_required": "%(orgs)s requires single sign-on: sign in at %(links)s.",
    }

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        orgs = list(sso_required_orgs_for_user(user_id=user.pk))
        if not orgs:
            return
        if user.is_staff:
            with transaction.atomic():
                for org in orgs:
                    audit_record(
                        org=org,
                        action="sso.break_glass_login",
                        actor=f"user:{user.get_username()}",
                        target=user.get_username(),
                        details={"reason": "platform staff password login"},
                    )
            return
        raise forms.ValidationError(
            self.error_messages["sso_required"],
            code="sso_required",
            params={
                "orgs": ", ".join(org.name for org in orgs),
                "links": ", ".join(sso_login_path(org) for org in orgs),
            },
        )


_NEXT_ORG = re.compile(r"^/orgs/(?P<slug>[a-z0-9-]{1,40})/")


def sso_org_for_next(next_path: str) -> Organization | None:
    """The organization a login's `next` leads to, when it signs people in with its provider."""
    match = _NEXT_ORG.match(next_path or "")
    if match is None:
        return None
    return (
        Organization.objects.filter(slug=match["slug"], sso_provider__isnull=False)
        .select_related("sso_provider")
        .first()
    )
