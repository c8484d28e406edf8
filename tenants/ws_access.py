"""An open WebSocket follows its caller's current rights, not the rights it had at the handshake.

Two paths, so that neither a quiet socket nor a Redis outage keeps access alive:

- Live: every socket follows its organization's audit stream (one XREAD per process for all of
  them, cadence_site/streams.py). A committed change to members, keys or the organization makes
  each socket re-read its caller's rights; a key's expiry is a scheduled re-read. Rights gone (key
  revoked or expired, member removed, creator gone, organization suspended) or below what the
  socket needs (consumers declare it with `access.require(role)`) close the socket with a code and
  a reason; a lower role that still suffices is applied to the next frame (`access.role`).
- Per frame: a frame arriving more than RECHECK_AFTER seconds after the last read re-reads first,
  and is refused with the socket's closing if the rights are gone. In a server whose access watch
  listens (tenants/access_watch.py: the database notifies every committed change to keys,
  members, users' rights, organizations, and an organization's teams, shares and orchestrators),
  the re-read is skipped while nothing was notified since the last one.
- Team rights (tenants/teams/scoping.py): a consumer whose socket is about one scoped resource
  (a conversation, a run) registers how to ask whether its caller still sees it
  (`access.follow(check)`). Every re-read asks it too, and a committed team change (a member
  leaving a team, a team deleted, an orchestrator unshared, moved or deleted) re-reads: a
  resource gone from the caller's sight closes the socket with the consumer's code and reason,
  within the same second or two as a revocation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

from django.contrib.auth import get_user_model
from django.utils import timezone

from cadence_site import streams
from tenants import access_watch
from tenants.audit.feed import audit_stream_key
from tenants.context import in_public
from tenants.models import ApiKey, Organization
from tenants.rights import api_key_effective_rights
from tenants.roles import Role, role_at_least
from tenants.selectors import membership_role

logger = logging.getLogger(__name__)

RECHECK_AFTER = 1.0
# Seconds between a quiet socket's looks at the access watch (tenants/access_watch.py).
NOTICE_POLL = 2.0
# A re-read is skipped on the access watch's word for at most this long after the last one.
SKIP_MAX_AGE = 60.0
# Audit actions that can change what a caller may do, or which resources they see.
RIGHTS_ACTIONS = (
    "member.",
    "api_key.",
    "organization.",
    "team.",
    "orchestrator.unshared",
    "orchestrator.shared",
    "orchestrator.team_changed",
    "orchestrator.deleted",
)
# Answers None while the socket's resource is still the caller's to see, else (code, reason).
ResourceCheck = Callable[[], Awaitable[tuple[int, str] | None]]


class LiveAccess:
    """The caller of one socket and its current role; shared with the consumer through the scope."""

    def __init__(self, *, org, user, role: str):
        self.org = org
        self.role = role
        self.minimum: str = Role.VIEWER
        key = getattr(user, "api_key", None)
        self.key_id = key.pk if key is not None else None
        self.user_id = None if key is not None else user.pk
        self.expires_at = getattr(user, "until", None) if key is not None else None
        self.principal_label = f"key:{key.prefix}" if key is not None else f"user:{user.pk}"
        self.checked_at = time.monotonic()
        self.stale = False
        self.resource_check: ResourceCheck | None = None
        # tenants/access_watch.version() as it was before the last full re-read: while it is
        # unchanged, nothing those reads depend on has changed, and a re-read is skipped.
        self.version: tuple | None = None
        self.read_at = time.monotonic()  # the last full read (the handshake's, at first)

    def require(self, role: str) -> None:
        """What this socket needs, kept for as long as it is open."""
        self.minimum = role

    def follow(self, check: ResourceCheck) -> None:
        """Ask `check` at every re-read (rights or team changes): a socket about one scoped
        resource closes when its caller no longer sees it. Register before the first read of
        the resource, so that a change committed meanwhile is not missed."""
        self.resource_check = check


def access_recheck(
    *, org_id: int, user_id: int | None, key_id
) -> tuple[str | None, int, str, object]:
    """(role, 0, "") while the caller may still act, else (None, close code, reason). Public schema."""
    status = Organization.objects.filter(pk=org_id).values_list("status", flat=True).first()
    if status is None:
        return None, 4404, "not_found", None
    if status != Organization.Status.ACTIVE:
        return None, 4403, "org_suspended", None
    if key_id is not None:
        key = ApiKey.objects.filter(pk=key_id).first()
        if key is None or key.revoked_at is not None:
            return None, 4401, "api_key_revoked", None
        if key.expires_at is not None and key.expires_at <= timezone.now():
            return None, 4401, "api_key_expired", None
        role, until = api_key_effective_rights(key)
        return (role, 0, "", until) if role else (None, 4401, "api_key_creator_gone", None)
    if not get_user_model().objects.filter(pk=user_id, is_active=True).exists():
        return None, 4401, "user_inactive", None
    role = membership_role(user_id=user_id, org_id=org_id)
    return (role, 0, "", None) if role else (None, 4403, "membership_ended", None)


async def _watch(access: LiveAccess, recheck) -> None:
    key = audit_stream_key(access.org.schema_name)
    hub = streams.hub()
    try:
        start = await hub.latest_id(key)
    except Exception as exc:  # Redis away: frames still re-check (RECHECK_AFTER)
        logger.warning("rights feed position unavailable", extra={"error": str(exc)})
        start = streams.now_id()
    queue = hub.subscribe(key, start)
    try:
        while True:
            timeout = None
            if access.expires_at is not None:
                timeout = max(0.0, (access.expires_at - timezone.now()).total_seconds()) + 0.05
            if access_watch.listening():
                # A change the database notified but no audit entry announced (a bulk update,
                # psql): seen within NOTICE_POLL even on a socket that sends nothing.
                timeout = NOTICE_POLL if timeout is None else min(timeout, NOTICE_POLL)
            try:
                text = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:  # the key's expiry, or time to look at the access watch
                expired = access.expires_at is not None and access.expires_at <= timezone.now()
                seen = access_watch.version(access.org.id, access.org.schema_name)
                if expired or (access.version is not None and seen != access.version):
                    access.stale = expired or access.stale
                    await recheck()
                continue
            try:
                action = json.loads(text).get("action", "")
            except (ValueError, AttributeError):
                continue
            if isinstance(action, str) and action.startswith(RIGHTS_ACTIONS):
                access.stale = True
                await recheck()
    finally:
        hub.unsubscribe(key, queue)


async def guard(inner, scope, connect_message, receive, send, *, access: LiveAccess, subprotocol):
    """Run the consumer `inner`, closing its socket when its caller's rights end."""
    closed = asyncio.Event()
    close_code = 1000
    accepted = False
    replayed = False
    pending: asyncio.Future | None = None
    lock = asyncio.Lock()

    async def guarded_send(message):
        nonlocal accepted
        if closed.is_set():
            return  # closed here already; the consumer learns it from its next receive
        if message["type"] == "websocket.accept":
            accepted = True
            if subprotocol and not message.get("subprotocol"):
                message = dict(message, subprotocol=subprotocol)
        await send(message)

    async def close(code: int, reason: str) -> None:
        nonlocal close_code
        if closed.is_set():
            return
        closed.set()
        close_code = code
        logger.info("socket closed: rights changed", extra={"close_code": code, "reason": reason})
        if not accepted:
            await send(
                {
                    "type": "websocket.accept",
                    **({"subprotocol": subprotocol} if subprotocol else {}),
                }
            )
        await send({"type": "websocket.close", "code": code, "reason": reason})

    async def recheck() -> bool:
        async with lock:  # the watcher and a frame may both ask; one read answers both
            if closed.is_set():
                return False
            seen = access_watch.version(access.org.id, access.org.schema_name)
            if (
                seen is not None
                and seen == access.version
                and not access.stale
                and time.monotonic() - access.read_at < SKIP_MAX_AGE
                and (access.expires_at is None or access.expires_at > timezone.now())
            ):
                access.checked_at = time.monotonic()  # nothing notified since the last read
                return True
            role, code, reason, until = await in_public(
                access_recheck, org_id=access.org.id, user_id=access.user_id, key_id=access.key_id
            )
            access.checked_at, access.stale = time.monotonic(), False
            access.read_at = access.checked_at
            if access.key_id is not None:
                access.expires_at = until  # the chain's earliest expiry, as now committed
            if role is None:
                await close(code, reason)
                return False
            access.role = role
            if not role_at_least(role, access.minimum):
                await close(4403, f"role_required: {access.minimum}")
                return False
            if access.resource_check is not None:
                gone = await access.resource_check()
                if gone is not None:
                    await close(*gone)
                    return False
            access.version = seen
            return True

    async def guarded_receive():
        nonlocal replayed, pending
        if not replayed:
            replayed = True
            return connect_message
        while True:
            if closed.is_set():
                return {"type": "websocket.disconnect", "code": close_code}
            if pending is None:
                pending = asyncio.ensure_future(receive())
            closing = asyncio.ensure_future(closed.wait())
            try:
                await asyncio.wait({pending, closing}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closing.cancel()
            if not pending.done():
                continue
            message, pending = pending.result(), None
            if message["type"] == "websocket.receive" and (
                access.stale or time.monotonic() - access.checked_at > RECHECK_AFTER
            ):
                if not await recheck():
                    return {"type": "websocket.disconnect", "code": close_code}
            return message

    watcher = asyncio.create_task(_watch(access, recheck))
    try:
        return await inner(scope, guarded_receive, guarded_send)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        if pending is not None:
            pending.cancel()
            # Retrieved, whatever it ended with: a receive that failed as the client went away
            # would otherwise be logged as "Task exception was never retrieved".
            await asyncio.gather(pending, return_exceptions=True)
