"""Writes of alerts: rules (audited), firings (idempotent per rule and cause), notifications.

Call inside the organization's schema. Notifications leave through Celery tasks enqueued when
the firing commits (engine/alerts/tasks.py): a webhook signed with the rule's own secret through
the one signed-webhook client (cadence_site/webhooks.py: egress policy, timeout, no redirects)
and/or an email through Django's email backend, each retried with exponential backoff.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from cadence_site.errors import ApplicationError
from cadence_site.outbound import UNRESOLVABLE, EgressDenied, check_url
from cadence_site.webhooks import WebhookError, webhook_post
from engine.alerts import evaluate
from engine.alerts.models import RUN_KINDS, WINDOW_KINDS, AlertEvent, AlertRule, AlertRuleShare
from engine.models import Run
from orchestrators import crypto
from tenants.audit.changes import audit_change
from tenants.teams.models import ShareLevel
from tenants.teams.scoping import TeamScope, require_create_in, require_level

logger = logging.getLogger(__name__)

# Which parameters each kind needs (the rest must be left out).
KIND_PARAMETERS: dict[str, tuple[str, ...]] = {
    "run_failed": ("error_code",),
    "step_failed": ("error_code",),
    "log_match": ("pattern",),
    "slow_run": ("threshold_ms",),
    "slow_step": ("threshold_ms",),
    "failure_rate": ("window_seconds", "failure_rate", "min_runs"),
    "tokens_over": ("window_seconds", "tokens"),
    "drift": (),
}
REQUIRED_PARAMETERS: dict[str, tuple[str, ...]] = {
    "log_match": ("pattern",),
    "slow_run": ("threshold_ms",),
    "slow_step": ("threshold_ms",),
    "failure_rate": ("window_seconds", "failure_rate"),
    "tokens_over": ("window_seconds", "tokens"),
}
PARAMETERS = ("error_code", "pattern", "threshold_ms", "window_seconds", "min_runs",
              "failure_rate", "tokens")  # fmt: skip
EDITABLE = ("name", "kind", "enabled", "orchestrator", *PARAMETERS, "webhook_url", "emails")
SECRET_BYTES = 32


def _invalid(message: str, field: str) -> ApplicationError:
    return ApplicationError(message, "invalid", {"field": field})


def _empty(value: Any) -> bool:
    return value is None or value == ""


def _check_rule(rule: AlertRule) -> None:
    """The whole rule, as it would be saved: parameters fit its kind, a target exists."""
    needed, allowed = REQUIRED_PARAMETERS.get(rule.kind, ()), KIND_PARAMETERS[rule.kind]
    for name in needed:
        if _empty(getattr(rule, name)):
            raise _invalid(f"A {rule.kind} rule needs {name}.", name)
    for name in PARAMETERS:
        if name not in allowed and not _empty(getattr(rule, name)):
            raise _invalid(f"A {rule.kind} rule takes no {name}.", name)
    if rule.kind == "log_match":
        try:
            evaluate.pattern_compile(rule.pattern)
        except evaluate.PatternError as exc:
            raise _invalid(str(exc), "pattern") from None
    if rule.failure_rate is not None and not 0 < rule.failure_rate <= 1:
        raise _invalid("failure_rate is a fraction above 0 and at most 1.", "failure_rate")
    if not rule.webhook_url and not rule.emails:
        raise _invalid("A rule needs a webhook_url, emails, or both.", "webhook_url")
    if rule.webhook_url:
        _check_webhook_url(rule.webhook_url)


def _check_webhook_url(url: str) -> None:
    """The egress policy now (checked again at every delivery): a host that does not resolve yet
    is accepted, a refused address or scheme is a 400 naming the field."""
    try:
        check_url(url)
    except EgressDenied as exc:
        if (exc.extra or {}).get("reason") == UNRESOLVABLE:
            return
        raise ApplicationError(
            exc.message, "egress_denied", {**exc.extra, "field": "webhook_url"}
        ) from None


def _snapshot(rule: AlertRule) -> dict[str, Any]:
    """What the audit trail keeps of a rule: never its secret."""
    return {name: getattr(rule, name) for name in EDITABLE} | {
        "has_webhook_secret": bool(rule.webhook_secret),
        "team": str(rule.team_id) if rule.team_id else None,
    }


def _team_move(*, rule: AlertRule, team, actor, scope: TeamScope | None) -> None:
    """Moves the rule to `team` (None: the whole organization), audited as
    `alert_rule.team_changed` like the other team resources; the caller creates in the new team.
    Inside the caller's transaction. Its history stays with it."""
    from orchestrators.services import _team_label

    new_id = team.pk if team is not None else None
    if new_id == rule.team_id:
        return
    require_create_in(scope, team=team, what="alert rule")
    before_id = rule.team_id
    rule.team = team
    if team is not None:
        # A team does not share with itself: its own share of the rule would say nothing.
        AlertRuleShare.objects.filter(rule=rule, team=team).delete()
    audit_change(
        action="alert_rule.team_changed",
        target=f"alert_rule:{rule.id}",
        actor=actor,
        before={"team": _team_label(before_id)},
        after={"team": _team_label(new_id)},
    )


def _new_secret(rule: AlertRule) -> str:
    secret = "whsec_" + secrets.token_urlsafe(SECRET_BYTES)
    rule.webhook_secret = crypto.encrypt(secret)
    return secret


@transaction.atomic
def alert_rule_create(
    *, actor, team=None, scope: TeamScope | None = None, **fields: Any
) -> tuple[AlertRule, str | None]:
    """The rule and its webhook secret (shown once; None without a webhook). `team` its team
    (None: organization-wide); `scope` the caller's (None: a trusted caller): a team's
    maintainers create in it, admins and owners anywhere (tenants/teams/scoping.py)."""
    from tenants.audit.changes import actor_label

    require_create_in(scope, team=team, what="alert rule")
    rule = AlertRule(**{k: v for k, v in fields.items() if k in EDITABLE}, team=team)
    rule.created_by = actor_label(actor)[:200]
    _check_rule(rule)
    secret = _new_secret(rule) if rule.webhook_url else None
    rule.save()
    audit_change(
        action="alert_rule.created", target=f"alert_rule:{rule.id}", actor=actor,
        after=_snapshot(rule),
    )  # fmt: skip
    return rule, secret


@transaction.atomic
def alert_rule_update(
    *,
    rule: AlertRule,
    actor,
    rotate_secret: bool = False,
    scope: TeamScope | None = None,
    **fields: Any,
) -> tuple[AlertRule, str | None]:
    """Change a rule; the new webhook secret when one was made (a first webhook, or asked).
    The caller manages it; a `team` in `fields` moves it (and they create in the new team)."""
    rule = AlertRule.objects.select_for_update().get(pk=rule.pk)
    require_level(scope, kind="alert_rule", obj=rule, level=ShareLevel.MANAGE, what="alert rule")
    if "team" in fields:
        _team_move(rule=rule, team=fields.pop("team"), actor=actor, scope=scope)
    before = _snapshot(rule)
    kind_changed = "kind" in fields and fields["kind"] != rule.kind
    for name, value in fields.items():
        if name in EDITABLE:
            setattr(rule, name, value)
    if kind_changed:
        # Parameters of the former kind that the new kind does not take are dropped.
        for name in PARAMETERS:
            if name not in KIND_PARAMETERS[rule.kind] and name not in fields:
                setattr(rule, name, "" if name in ("error_code", "pattern") else None)
    _check_rule(rule)
    secret = None
    if rule.webhook_url and (rotate_secret or not rule.webhook_secret):
        secret = _new_secret(rule)
    elif not rule.webhook_url:
        rule.webhook_secret = ""  # a webhook added later gets a new secret, shown then
    rule.save()
    audit_change(
        action="alert_rule.updated", target=f"alert_rule:{rule.id}", actor=actor,
        before=before, after=_snapshot(rule) | {"secret_rotated": secret is not None},
    )  # fmt: skip
    return rule, secret


@transaction.atomic
def alert_rule_delete(*, rule: AlertRule, actor, scope: TeamScope | None = None) -> None:
    require_level(scope, kind="alert_rule", obj=rule, level=ShareLevel.MANAGE, what="alert rule")
    before = _snapshot(rule)
    target = f"alert_rule:{rule.id}"
    rule.delete()
    audit_change(action="alert_rule.deleted", target=target, actor=actor, before=before)


# --- firing -----------------------------------------------------------------------------------


def _enqueue_delivery(event: AlertEvent) -> None:
    from engine.alerts.tasks import deliver, enqueue

    schema_name = connection.schema_name
    targets = [
        target
        for target, status in (("webhook", event.webhook_status), ("email", event.email_status))
        if status == AlertEvent.Delivery.PENDING
    ]
    for target in targets:
        transaction.on_commit(
            lambda target=target: enqueue(
                deliver, schema_name=schema_name, event_id=str(event.id), target=target
            )
        )


def alert_fire(*, rule: AlertRule, finding: evaluate.Finding) -> AlertEvent | None:
    """Record one firing; None when this rule already fired for this cause (a task run twice)."""
    pending, none = AlertEvent.Delivery.PENDING, AlertEvent.Delivery.NONE
    try:
        with transaction.atomic():
            event = AlertEvent.objects.create(
                rule=rule,
                key=finding.key,
                run_id=finding.run_id,
                reason=finding.reason,
                details=json.loads(json.dumps(finding.details, default=str)),
                webhook_status=pending if rule.webhook_url else none,
                email_status=pending if rule.emails else none,
            )
            _enqueue_delivery(event)
    except IntegrityError:
        return None
    return event


def alerts_for_run(*, run_id: str) -> list[AlertEvent]:
    """Judge a finished run against every enabled rule (windowed rules too: this run may be what
    tips them). Safe to call twice: a cause fires a rule once."""
    run = Run.objects.filter(pk=run_id).select_related("orchestrator", "snapshot").first()
    if run is None or run.status in (Run.Status.QUEUED, Run.Status.RUNNING):
        return []
    fired = []
    for rule in AlertRule.objects.filter(enabled=True):
        try:
            finding = evaluate.run_findings(rule, run)
        except Exception:  # one broken rule must not silence the others
            logger.exception("alert rule failed", extra={"rule": str(rule.id), "run": run_id})
            continue
        if finding is not None:
            event = alert_fire(rule=rule, finding=finding)
            if event is not None:
                fired.append(event)
    return fired


def alerts_for_windows(*, now=None) -> list[AlertEvent]:
    """Judge every enabled windowed rule now (beat: a rate reached without a run ending later)."""
    now = now or timezone.now()
    fired = []
    for rule in AlertRule.objects.filter(enabled=True, kind__in=WINDOW_KINDS):
        finding = evaluate.window_finding(rule, now=now)
        if finding is not None:
            event = alert_fire(rule=rule, finding=finding)
            if event is not None:
                fired.append(event)
    return fired


def rules_exist() -> bool:
    return AlertRule.objects.filter(enabled=True).exists()


# --- notifications --------------------------------------------------------------------------


def alert_payload(event: AlertEvent) -> dict[str, Any]:
    from engine.trust.log import organization_slug

    rule = event.rule
    return {
        "id": str(event.id),
        "type": "alert",
        "organization": organization_slug(connection.schema_name),
        "rule": {"id": str(rule.id), "name": rule.name, "kind": rule.kind},
        "run": str(event.run_id) if event.run_id else None,
        "reason": event.reason,
        "details": event.details,
        "created_at": event.created_at.isoformat(),
    }


def _mark(event_id, target: str, status: str, error: str = "") -> None:
    fields = {f"{target}_status": status, f"{target}_error": error[:2000]}
    if status == AlertEvent.Delivery.DELIVERED:
        fields["delivered_at"] = timezone.now()
    AlertEvent.objects.filter(pk=event_id).update(**fields)


class DeliveryRetry(Exception):
    """A notification that failed and is worth another attempt."""


def alert_deliver(*, event_id: str, target: str, final: bool = False) -> str:
    """One attempt at one notification of an event; its status afterwards. Raises DeliveryRetry
    when a later attempt may succeed (unless `final`: then the delivery is marked failed).
    Idempotent: a delivered (or given-up) notification is not sent again."""
    event = AlertEvent.objects.select_related("rule").filter(pk=event_id).first()
    if event is None or getattr(event, f"{target}_status") != AlertEvent.Delivery.PENDING:
        return getattr(event, f"{target}_status", "gone")
    AlertEvent.objects.filter(pk=event_id).update(
        **{f"{target}_attempts": F(f"{target}_attempts") + 1}
    )
    rule = event.rule
    body = json.dumps(alert_payload(event), separators=(",", ":")).encode()
    try:
        if target == "webhook":
            if not rule.webhook_url:
                _mark(event_id, target, AlertEvent.Delivery.FAILED, "the rule has no webhook now")
                return AlertEvent.Delivery.FAILED
            webhook_post(
                url=rule.webhook_url,
                body=body,
                secret=crypto.decrypt(rule.webhook_secret),
                # The receiver's idempotency key: a retried delivery carries the same id.
                headers={"X-Cadence-Event": str(event.id), "Idempotency-Key": str(event.id)},
                timeout=float(settings.CADENCE_ALERT_WEBHOOK_TIMEOUT),
            )
        else:
            payload = json.loads(body)
            send_mail(
                subject=f"[Cadence alert] {rule.name}: {event.reason[:120]}",
                message=_email_text(payload),
                from_email=None,
                recipient_list=list(rule.emails),
            )
    except EgressDenied as exc:  # retrying cannot change the policy's answer
        _mark(event_id, target, AlertEvent.Delivery.FAILED, exc.message)
        return AlertEvent.Delivery.FAILED
    except (WebhookError, OSError, ValueError) as exc:
        error = str(exc) or type(exc).__name__
        if final:
            _mark(event_id, target, AlertEvent.Delivery.FAILED, error)
            return AlertEvent.Delivery.FAILED
        AlertEvent.objects.filter(pk=event_id).update(**{f"{target}_error": error[:2000]})
        raise DeliveryRetry(error) from None
    _mark(event_id, target, AlertEvent.Delivery.DELIVERED)
    return AlertEvent.Delivery.DELIVERED


def _email_text(payload: dict[str, Any]) -> str:
    lines = [
        f"Rule: {payload['rule']['name']} ({payload['rule']['kind']})",
        f"Organization: {payload['organization']}",
        f"Reason: {payload['reason']}",
    ]
    if payload["run"]:
        lines.append(f"Run: {payload['run']}")
    lines.append(f"Event: {payload['id']} at {payload['created_at']}")
    return "\n".join(lines) + "\n"


__all__ = [
    "RUN_KINDS",
    "WINDOW_KINDS",
    "alert_deliver",
    "alert_fire",
    "alert_rule_create",
    "alert_rule_delete",
    "alert_rule_update",
    "alerts_for_run",
    "alerts_for_windows",
]
