"""Invitations: owners, admins and team maintainers invite by email; the invitee accepts once.

The token is a random secret sent only in the email; the database keeps its SHA-256. Accepting
checks the inviter's rights as they are then, not as they were: an invitation sent by an admin who
has since been demoted or removed grants nothing.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone
from django_tenants.utils import schema_context

from cadence_site.errors import ApplicationError, ForbiddenError, NotFoundError
from tenants.invitations.models import Invitation
from tenants.models import ApiKey, Membership, Organization
from tenants.rights import api_key_effective_role, key_is_live
from tenants.roles import Role, role_at_least
from tenants.selectors import membership_role
from tenants.services import _actor_label, audit_record, membership_add
from tenants.teams.models import Team, TeamMembership, TeamRole
from tenants.teams.selectors import team_manageable_by

logger = logging.getLogger(__name__)
User = get_user_model()

TOKEN_PREFIX = "inv_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _ttl() -> timedelta:
    return timedelta(hours=settings.CADENCE_INVITATION_TTL_HOURS)


def _may_invite(
    *,
    org: Organization,
    inviter_role: str | None,
    inviter_id: int | None,
    role: str,
    team: Team | None,
) -> str | None:
    """None when the inviter may send this invitation now; otherwise why not."""
    if inviter_role is None:
        return "The inviter is no longer a member of the organization."
    if role == Role.OWNER and inviter_role != Role.OWNER:
        return "Only an owner can invite an owner."
    if role_at_least(inviter_role, Role.ADMIN):
        return None
    # Team maintainers invite to their team, as members or viewers of the organization.
    if team is None:
        return "Inviting to the organization needs the admin role or higher."
    if role_at_least(role, Role.ADMIN):
        return "A team maintainer invites members and viewers only."
    with schema_context(org.schema_name):
        if team_manageable_by(org=org, team=team, org_role=inviter_role, user_id=inviter_id):
            return None
    return "Only the organization's admins and the team's maintainers invite to this team."


def _send(*, invitation: Invitation, token: str, accept_url: str) -> None:
    context = {
        "org": invitation.organization,
        "invitation": invitation,
        # In the query string, which the access log drops (cadence_site/requestlog.py).
        "accept_url": f"{accept_url}?token={token}",
        "expires_at": invitation.expires_at,
    }
    send_mail(
        subject=f"You are invited to {invitation.organization.name} on Cadence",
        message=render_to_string("invitations/email.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[invitation.email],
    )
    # The address and the invitation's id, never the token.
    logger.info("invitation %s sent to %s", invitation.id, invitation.email)


def _new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@transaction.atomic
def invitation_create(
    *,
    org: Organization,
    email: str,
    role: str,
    actor,
    actor_role: str,
    accept_url: str,
    team: Team | None = None,
    team_role: str = "",
) -> Invitation:
    """`accept_url` is the accept page's address (`…/invitations/`); the email adds the token."""
    email = User.objects.normalize_email(email).strip().lower()
    actor_id = actor.pk if isinstance(actor, User) else None
    why = _may_invite(org=org, inviter_role=actor_role, inviter_id=actor_id, role=role, team=team)
    if why:
        raise ForbiddenError(why, "invite_not_allowed")
    if (
        team is None
        and Membership.objects.filter(organization_id=org.id, user__email__iexact=email).exists()
    ):
        raise ApplicationError(
            "That address is already a member.", "already_member", {"field": "email"}
        )
    token = _new_token()
    try:
        with transaction.atomic():
            invitation = Invitation.objects.create(
                organization_id=org.id,
                email=email,
                role=role,
                team_id=team.id if team else None,
                team_role=(team_role or TeamRole.MEMBER) if team else "",
                token_hash=token_hash(token),
                invited_by=actor if isinstance(actor, User) else None,
                invited_by_key=actor if isinstance(actor, ApiKey) else None,
                expires_at=timezone.now() + _ttl(),
                sent_at=timezone.now(),
                send_count=1,
            )
    except IntegrityError:
        raise ApplicationError(
            "An invitation to that address is already pending; resend it instead.",
            "invitation_pending",
            {"field": "email"},
        ) from None
    audit_record(
        org=org,
        action="invitation.created",
        actor=_actor_label(actor),
        target=email,
        details={
            "role": role,
            "team": team.slug if team else None,
            "team_role": invitation.team_role,
        },
    )
    transaction.on_commit(lambda: _send(invitation=invitation, token=token, accept_url=accept_url))
    return invitation


@transaction.atomic
def invitation_resend(
    *, invitation: Invitation, actor, actor_role: str, accept_url: str
) -> Invitation:
    """A fresh token and expiry; the old link stops working."""
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.accepted_at or invitation.revoked_at:
        raise ApplicationError(
            f"This invitation is {invitation.status}; only a pending or expired one is resent.",
            "invitation_closed",
        )
    org = invitation.organization
    team = _team_of(invitation)
    actor_id = actor.pk if isinstance(actor, User) else None
    why = _may_invite(
        org=org, inviter_role=actor_role, inviter_id=actor_id, role=invitation.role, team=team
    )
    if why:
        raise ForbiddenError(why, "invite_not_allowed")
    token = _new_token()
    invitation.token_hash = token_hash(token)
    invitation.expires_at = timezone.now() + _ttl()
    invitation.sent_at = timezone.now()
    invitation.send_count += 1
    invitation.save(
        update_fields=["token_hash", "expires_at", "sent_at", "send_count", "updated_at"]
    )
    audit_record(
        org=org, action="invitation.resent", actor=_actor_label(actor), target=invitation.email
    )
    transaction.on_commit(lambda: _send(invitation=invitation, token=token, accept_url=accept_url))
    return invitation


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor, actor_role: str) -> Invitation:
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.accepted_at or invitation.revoked_at:
        raise ApplicationError(
            f"This invitation is {invitation.status} already.", "invitation_closed"
        )
    team = _team_of(invitation)
    actor_id = actor.pk if isinstance(actor, User) else None
    why = _may_invite(
        org=invitation.organization,
        inviter_role=actor_role,
        inviter_id=actor_id,
        role=invitation.role,
        team=team,
    )
    if why:
        raise ForbiddenError(why, "invite_not_allowed")
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at", "updated_at"])
    audit_record(
        org=invitation.organization,
        action="invitation.revoked",
        actor=_actor_label(actor),
        target=invitation.email,
    )
    return invitation


def _team_of(invitation: Invitation) -> Team | None:
    if invitation.team_id is None:
        return None
    with schema_context(invitation.organization.schema_name):
        return Team.objects.filter(id=invitation.team_id).first()


def _invalid() -> NotFoundError:
    # One answer for an unknown, used, revoked or expired token: a token cannot be probed.
    return NotFoundError(
        "This invitation is not valid: it was used, revoked or has expired.", "invitation_invalid"
    )


def invitation_for_token(*, token: str) -> Invitation:
    """The pending invitation a token names, for showing it before acceptance."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        raise _invalid()
    invitation = (
        Invitation.objects.select_related("organization")
        .filter(token_hash=token_hash(token), accepted_at=None, revoked_at=None)
        .first()
    )
    if invitation is None or invitation.expires_at <= timezone.now():
        raise _invalid()
    return invitation


@transaction.atomic
def invitation_accept(
    *, token: str, user=None, username: str = "", password: str = ""
) -> tuple[Invitation, object]:
    """Accept as the signed-in `user` (whose email must match), or create the account.

    An existing account with the invited address must sign in first: a token proves control of
    the mailbox, not of the account, so it never signs anybody in.
    """
    found = invitation_for_token(token=token)
    # The row lock makes the token single-use under concurrent accepts.
    invitation = (
        Invitation.objects.select_for_update().select_related("organization").get(pk=found.pk)
    )
    if invitation.accepted_at or invitation.revoked_at or invitation.expires_at <= timezone.now():
        raise _invalid()
    org = invitation.organization
    if not org.is_active:
        raise ForbiddenError("This organization is suspended.", "org_suspended")
    if user is not None and getattr(user, "is_authenticated", False):
        if getattr(user, "api_key", None) is not None:
            raise ForbiddenError(
                "An invitation is accepted by a person, not an API key.", "user_required"
            )
        if user.email.lower() != invitation.email:
            raise ForbiddenError(
                "This invitation was sent to another address than your account's.",
                "invitation_email_mismatch",
            )
    else:
        if User.objects.filter(email__iexact=invitation.email).exists():
            raise ApplicationError(
                "An account with this address exists: sign in to accept the invitation.",
                "sign_in_required",
                status=409,
            )
        user = _user_create(email=invitation.email, username=username, password=password)
    team = _team_of(invitation)
    if invitation.team_id is not None and team is None:
        raise ApplicationError(
            "The team of this invitation no longer exists.", "invitation_team_gone"
        )
    inviter_id, inviter_role = _inviter_now(invitation)
    why = _may_invite(
        org=org, inviter_role=inviter_role, inviter_id=inviter_id, role=invitation.role, team=team
    )
    if why:
        raise ForbiddenError(f"The invitation no longer holds: {why}", "invitation_withdrawn")
    if not Membership.objects.filter(organization_id=org.id, user=user).exists():
        # The same service as every other way in: plan limits, audit.
        membership_add(
            org=org,
            email=user.email,
            role=invitation.role,
            # The inviter's authority was checked just above, on their current role.
            actor_role=Role.OWNER,
            actor=user,
        )
    elif invitation.team_id is None:
        raise ApplicationError("You are already a member of this organization.", "already_member")
    if team is not None:
        with schema_context(org.schema_name):
            TeamMembership.objects.update_or_create(
                team=team, user_id=user.pk, defaults={"role": invitation.team_role}
            )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by", "updated_at"])
    audit_record(
        org=org,
        action="invitation.accepted",
        actor=_actor_label(user),
        target=invitation.email,
        details={"role": invitation.role, "team": team.slug if team else None},
    )
    return invitation, user


def _inviter_now(invitation: Invitation) -> tuple[int | None, str | None]:
    """Who sent the invitation and the role they hold now (None when they hold none)."""
    key = invitation.invited_by_key
    if key is not None:
        live = key_is_live(key) and key.organization_id == invitation.organization_id
        return None, api_key_effective_role(key) if live else None
    if invitation.invited_by_id is None:
        return None, None
    user = invitation.invited_by
    if not user.is_active:
        return user.pk, None
    return user.pk, membership_role(user_id=user.pk, org_id=invitation.organization_id)


def _user_create(*, email: str, username: str, password: str):
    errors: dict[str, list[str]] = {}
    username = username.strip()
    if not username:
        errors["username"] = ["A username is required to create your account."]
    elif len(username) > 150 or User.objects.filter(username=username).exists():
        errors["username"] = ["That username is taken or too long."]
    if not password:
        errors["password"] = ["A password is required to create your account."]
    else:
        try:
            validate_password(password, User(username=username, email=email))
        except ValidationError as exc:
            errors["password"] = list(exc.messages)
    if errors:
        raise ApplicationError("The account could not be created.", "invalid", {"fields": errors})
    return User.objects.create_user(username=username, email=email, password=password)
