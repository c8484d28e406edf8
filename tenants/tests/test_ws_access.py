"""WebSocket credentials for every client, and open sockets that follow their caller's rights."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from cadence_site.asgi import application
from cadence_site.testing import ws_connect
from tenants import tickets
from tenants.models import ApiKey, Membership, Organization
from tenants.resolution import org_by_slug

AUDIT = "/ws/orgs/alpha/audit/"
SAME_ORIGIN = [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")]
NO_ORIGIN = [(b"host", b"127.0.0.1")]


def _sync_ticket(slug: str, principal) -> str:
    return tickets.ticket_issue(org=org_by_slug(slug), user=principal)


async def _ticket(slug: str, principal) -> str:
    return await database_sync_to_async(_sync_ticket)(slug, principal)


async def _open(path: str, headers=NO_ORIGIN, subprotocols=None):
    communicator = WebsocketCommunicator(
        application, path, headers=headers, subprotocols=subprotocols
    )
    opened, code = await ws_connect(communicator)
    return communicator, opened, code


async def _closed_within(communicator, seconds: float) -> tuple[dict, float]:
    started = time.monotonic()
    while True:
        message = await communicator.receive_output(timeout=seconds)
        if message["type"] == "websocket.close":
            return message, time.monotonic() - started


def _key_principal(key_id):
    from tenants.authentication import ApiKeyPrincipal

    return ApiKeyPrincipal(ApiKey.objects.get(pk=key_id))


@pytest.fixture
def temp_admin(committed_member):
    """A committed admin of alpha with an admin key of their own; removed afterwards."""
    return committed_member("alpha-ws-admin", "admin", key_role="admin")


# --- credentials --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_ticket_without_origin_is_accepted(world, committed_db):
    ticket = await _ticket("alpha", world.alpha.users["admin"])

    socket, opened, _ = await _open(f"{AUDIT}?ticket={ticket}", headers=NO_ORIGIN)

    assert opened is True
    await socket.send_json_to({"type": "audit.list", "limit": 1})
    assert (await socket.receive_json_from(timeout=5))["type"] == "audit.events"
    await socket.disconnect()


@pytest.mark.asyncio
async def test_an_api_key_in_the_authorization_header_works(world, committed_db):
    headers = [*NO_ORIGIN, (b"authorization", f"Bearer {world.alpha.keys['admin']}".encode())]

    socket, opened, _ = await _open(AUDIT, headers=headers)

    assert opened is True
    await socket.disconnect()


@pytest.mark.asyncio
async def test_an_api_key_as_a_bearer_subprotocol_works_and_is_never_echoed(world, committed_db):
    communicator = WebsocketCommunicator(
        application, AUDIT, headers=NO_ORIGIN, subprotocols=["bearer", world.alpha.keys["admin"]]
    )

    connected, subprotocol = await communicator.connect(timeout=5)

    assert (connected, subprotocol) == (True, "bearer")
    await communicator.send_json_to({"type": "audit.list", "limit": 1})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "audit.events"
    await communicator.disconnect()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("credential", "code", "reason"),
    [
        ("Bearer ck_notakeyatallnotakeyatallnotakey", 4401, "invalid_api_key"),
        ("none", 4401, "authentication_required"),
        ("bravo", 4404, "not_found"),
        ("member", 4403, "role_required: admin"),
    ],
)
async def test_refusals_close_with_a_code_and_a_reason(
    world, committed_db, credential, code, reason
):
    headers = list(SAME_ORIGIN)
    if credential.startswith("Bearer"):
        headers.append((b"authorization", credential.encode()))
    elif credential == "bravo":
        headers.append((b"authorization", f"Bearer {world.bravo.keys['owner']}".encode()))
    elif credential == "member":
        headers.append((b"authorization", f"Bearer {world.alpha.keys['member']}".encode()))

    socket, opened, got = await _open(AUDIT, headers=headers)

    assert (opened, got, socket.refusal["reason"]) == (False, code, reason)


@pytest.mark.asyncio
async def test_a_revoked_key_is_refused(world, temp_admin):
    from tenants.services import api_key_revoke

    _, key, secret = temp_admin
    await database_sync_to_async(api_key_revoke)(key=key, actor_role="owner")

    socket, opened, code = await _open(
        AUDIT, headers=[*NO_ORIGIN, (b"authorization", f"Bearer {secret}".encode())]
    )

    assert (opened, code, socket.refusal["reason"]) == (False, 4401, "api_key_revoked")


@pytest.mark.asyncio
async def test_a_ticket_is_used_up_by_its_first_presentation_even_when_refused(world, committed_db):
    ticket = await _ticket("alpha", world.alpha.users["admin"])

    _, wrong_org, code = await _open(f"/ws/orgs/bravo/audit/?ticket={ticket}")
    _, right_org, code_again = await _open(f"{AUDIT}?ticket={ticket}")

    assert (wrong_org, code) == (False, 4404)
    assert (right_org, code_again) == (False, 4401)


@pytest.mark.asyncio
async def test_a_ticket_for_a_key_that_expired_since_is_refused(world, temp_admin):
    _, key, _ = temp_admin
    principal = await database_sync_to_async(_key_principal)(key.pk)
    ticket = await _ticket("alpha", principal)
    await database_sync_to_async(ApiKey.objects.filter(pk=key.pk).update)(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    socket, opened, code = await _open(f"{AUDIT}?ticket={ticket}")

    assert (opened, code) == (False, 4401)
    assert "expired" in socket.refusal["reason"]


async def _cookie_for(user) -> bytes:
    from django.test import Client

    def login():
        client = Client()
        client.force_login(user)
        return client.cookies["sessionid"].value

    return f"sessionid={await database_sync_to_async(login)()}".encode()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("origin", "opens"),
    [
        (b"http://127.0.0.1", True),
        (b"http://evil.localhost", False),
        (b"http://bravo.localhost", False),
        (b"https://127.0.0.1", False),
        (None, False),
    ],
)
async def test_cookie_sockets_need_exactly_this_servers_origin(world, committed_db, origin, opens):
    cookie = await _cookie_for(world.alpha.users["admin"])
    headers = [(b"host", b"127.0.0.1"), (b"cookie", cookie)]
    if origin is not None:
        headers.append((b"origin", origin))

    socket, opened, code = await _open(AUDIT, headers=headers)

    assert opened is opens
    if opens:
        await socket.disconnect()
    else:
        assert (code, socket.refusal["reason"]) == (4403, "origin_not_allowed")


# --- open sockets follow rights ------------------------------------------------------------------


async def _admin_socket(temp_admin, via: str):
    membership, key, secret = temp_admin
    if via == "key":
        headers = [*NO_ORIGIN, (b"authorization", f"Bearer {secret}".encode())]
        socket, opened, _ = await _open(AUDIT, headers=headers)
    else:
        ticket = await _ticket("alpha", membership.user)
        socket, opened, _ = await _open(f"{AUDIT}?ticket={ticket}")
    assert opened
    # The socket is live and its rights feed subscribed before the change is made.
    await socket.send_json_to({"type": "audit.list", "limit": 1})
    assert (await socket.receive_json_from(timeout=5))["type"] == "audit.events"
    await asyncio.sleep(0.2)
    return socket


def _demote(membership, role):
    from tenants.services import membership_update

    membership = Membership.objects.select_related("user", "organization").get(pk=membership.pk)
    membership_update(membership=membership, role=role, actor_role="owner")


def _remove(membership):
    from tenants.services import membership_remove

    membership = Membership.objects.select_related("user", "organization").get(pk=membership.pk)
    membership_remove(membership=membership, actor_role="owner")


def _revoke(key):
    from tenants.services import api_key_revoke

    api_key_revoke(
        key=ApiKey.objects.select_related("organization").get(pk=key.pk), actor_role="owner"
    )


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("via", "change", "code", "reason"),
    [
        ("ticket", "demote", 4403, "role_required: admin"),
        ("ticket", "remove", 4403, "membership_ended"),
        ("key", "revoke", 4401, "api_key_revoked"),
        ("key", "demote", 4403, "role_required: admin"),
        ("key", "remove", 4401, "api_key_creator_gone"),
    ],
)
async def test_an_open_socket_closes_within_two_seconds_of_a_change(
    world, temp_admin, via, change, code, reason
):
    membership, key, _ = temp_admin
    socket = await _admin_socket(temp_admin, via)

    if change == "demote":
        await database_sync_to_async(_demote)(membership, "member")
    elif change == "remove":
        await database_sync_to_async(_remove)(membership)
    else:
        await database_sync_to_async(_revoke)(key)
    closed, elapsed = await _closed_within(socket, 2)

    assert (closed["code"], closed["reason"]) == (code, reason)
    assert elapsed < 2


@pytest.mark.asyncio
async def test_a_suspended_organization_closes_its_open_sockets(world, temp_admin):
    from tenants.services import organization_resume, organization_suspend

    socket = await _admin_socket(temp_admin, "ticket")
    org = await database_sync_to_async(Organization.objects.get)(slug="alpha")
    try:
        await database_sync_to_async(organization_suspend)(org=org)
        closed, elapsed = await _closed_within(socket, 2)
    finally:
        await database_sync_to_async(organization_resume)(org=org)

    assert (closed["code"], closed["reason"], elapsed < 2) == (4403, "org_suspended", True)


@pytest.mark.asyncio
async def test_a_change_the_feed_missed_is_refused_on_the_next_frame(world, temp_admin):
    membership, _, _ = temp_admin
    socket = await _admin_socket(temp_admin, "ticket")
    # Straight to the database: no audit event, as when Redis was away at the time.
    await database_sync_to_async(Membership.objects.filter(pk=membership.pk).delete)()
    await asyncio.sleep(1.1)

    await socket.send_json_to({"type": "audit.list", "limit": 1})
    closed, _ = await _closed_within(socket, 2)

    assert (closed["code"], closed["reason"]) == (4403, "membership_ended")


@pytest.mark.asyncio
async def test_a_socket_closes_when_its_key_expires(world, temp_admin):
    _, key, secret = temp_admin
    await database_sync_to_async(ApiKey.objects.filter(pk=key.pk).update)(
        expires_at=timezone.now() + timedelta(seconds=1.5)
    )
    socket = await _admin_socket(temp_admin, "key")

    closed, elapsed = await _closed_within(socket, 3)

    assert (closed["code"], closed["reason"]) == (4401, "api_key_expired")
