from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django_tenants.utils import schema_context

from cadence_site.asgi import application
from cadence_site.testing import ws_connect
from tenants import tickets
from tenants.audit.models import AuditEvent
from tenants.resolution import org_by_slug


def _sync_ticket(slug: str, user) -> str:
    return tickets.ticket_issue(org=org_by_slug(slug), user=user)


async def _ticket(slug: str, user) -> str:
    return await database_sync_to_async(_sync_ticket)(slug, user)


def _key_user(world, org: str, role: str):
    from tenants.authentication import ApiKeyPrincipal
    from tenants.models import ApiKey

    fixture = getattr(world, org)
    return ApiKeyPrincipal(
        ApiKey.objects.select_related("organization").get(pk=fixture.key_ids[role])
    )


async def _connect(path: str):
    communicator = WebsocketCommunicator(
        application, path, headers=[(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")]
    )
    connected, code = await ws_connect(communicator)
    return communicator, connected, code


@pytest.fixture
def audit_rows(world, committed_db):
    marker = "ws-isolation"
    for slug in ("alpha", "bravo"):
        with schema_context(f"org_{slug}"):
            AuditEvent.objects.create(action="test.marker", actor=marker, target=slug)
    yield
    for slug in ("alpha", "bravo"):
        with schema_context(f"org_{slug}"):
            AuditEvent.objects.filter(actor=marker).delete()


@pytest.mark.asyncio
async def test_two_organizations_alternating_calls_see_only_their_own_rows(world, audit_rows):
    alpha_ticket = await _ticket("alpha", world.alpha.users["admin"])
    bravo_ticket = await _ticket("bravo", world.bravo.users["admin"])
    alpha, ok_a, _ = await _connect(f"/ws/orgs/alpha/audit/?ticket={alpha_ticket}")
    bravo, ok_b, _ = await _connect(f"/ws/orgs/bravo/audit/?ticket={bravo_ticket}")
    assert ok_a and ok_b

    for _ in range(100):
        await alpha.send_json_to({"type": "audit.list", "limit": 500})
        await bravo.send_json_to({"type": "audit.list", "limit": 500})
        got_a, got_b = await asyncio.gather(
            alpha.receive_json_from(timeout=5), bravo.receive_json_from(timeout=5)
        )
        assert {e["target"] for e in got_a["events"] if e["action"] == "test.marker"} == {"alpha"}
        assert {e["target"] for e in got_b["events"] if e["action"] == "test.marker"} == {"bravo"}
        assert got_a["org"] == "alpha" and got_b["org"] == "bravo"

    await alpha.disconnect()
    await bravo.disconnect()


@pytest.mark.asyncio
async def test_ticket_works_once(world, committed_db):
    ticket = await _ticket("alpha", world.alpha.users["admin"])

    first, ok_first, _ = await _connect(f"/ws/orgs/alpha/audit/?ticket={ticket}")
    second, ok_second, code = await _connect(f"/ws/orgs/alpha/audit/?ticket={ticket}")

    assert ok_first is True
    assert (ok_second, code) == (False, 4401)
    await first.disconnect()


@pytest.mark.asyncio
async def test_another_organizations_ticket_is_refused(world, committed_db):
    bravo_ticket = await _ticket("bravo", world.bravo.users["owner"])

    _, connected, code = await _connect(f"/ws/orgs/alpha/audit/?ticket={bravo_ticket}")

    assert (connected, code) == (False, 4404)


@pytest.mark.asyncio
async def test_another_organizations_key_ticket_is_refused(world, committed_db):
    # A ticket issued to bravo's key but presented to alpha (e.g. by a confused client).
    principal = await database_sync_to_async(_key_user)(world, "bravo", "owner")
    ticket = await _ticket("bravo", principal)

    _, connected, code = await _connect(f"/ws/orgs/alpha/audit/?ticket={ticket}")

    assert (connected, code) == (False, 4404)


@pytest.mark.asyncio
async def test_no_credentials_and_unknown_org_are_refused(world, committed_db):
    _, connected, code = await _connect("/ws/orgs/alpha/audit/")
    assert (connected, code) == (False, 4401)

    _, connected, code = await _connect("/ws/orgs/nowhere/audit/?ticket=abc")
    assert (connected, code) == (False, 4401)


@pytest.mark.asyncio
async def test_suspended_organization_is_refused(world, committed_db):
    from tenants.models import Organization
    from tenants.services import organization_resume, organization_suspend

    org = await database_sync_to_async(Organization.objects.get)(slug="alpha")
    await database_sync_to_async(organization_suspend)(org=org)
    try:
        ticket = await _ticket("alpha", world.alpha.users["owner"])
        _, connected, code = await _connect(f"/ws/orgs/alpha/audit/?ticket={ticket}")
    finally:
        await database_sync_to_async(organization_resume)(org=org)

    assert (connected, code) == (False, 4403)


@pytest.mark.asyncio
async def test_session_cookie_authenticates_and_non_member_is_refused(world, committed_db):
    from django.test import Client

    def login(user):
        client = Client()
        client.force_login(user)
        return client

    member = await database_sync_to_async(login)(world.alpha.users["admin"])
    outsider = await database_sync_to_async(login)(world.outsider)

    async def connect_with(client):
        cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
        communicator = WebsocketCommunicator(
            application,
            "/ws/orgs/alpha/audit/",
            headers=[
                (b"host", b"127.0.0.1"),
                (b"origin", b"http://127.0.0.1"),
                (b"cookie", cookie),
            ],
        )
        return communicator, *await ws_connect(communicator)

    ok_comm, ok, _ = await connect_with(member)
    _, refused, code = await connect_with(outsider)

    assert ok is True
    assert (refused, code) == (False, 4404)
    await ok_comm.disconnect()


@pytest.mark.asyncio
async def test_malformed_frames_get_an_error_and_the_connection_stays(world, committed_db):
    communicator, connected, _ = await _connect(
        f"/ws/orgs/alpha/audit/?ticket={await _ticket('alpha', world.alpha.users['admin'])}"
    )
    assert connected

    await communicator.send_to(text_data="{oops")
    assert (await communicator.receive_json_from())["code"] == "malformed_json"
    await communicator.send_json_to({"type": "audit.list", "limit": 10_000})
    assert (await communicator.receive_json_from())["code"] == "invalid_limit"
    await communicator.send_json_to({"type": "audit.list", "limit": 1})
    assert (await communicator.receive_json_from())["type"] == "audit.events"
    await communicator.disconnect()


@pytest.mark.asyncio
async def test_a_lower_role_is_refused(world, committed_db):
    ticket = await _ticket("alpha", world.alpha.users["member"])

    _, connected, code = await _connect(f"/ws/orgs/alpha/audit/?ticket={ticket}")

    assert (connected, code) == (False, 4403)


@pytest.mark.asyncio
async def test_committed_audit_events_arrive_live_in_their_own_organization_only(
    world, committed_db
):
    from django.db import transaction

    from tenants.models import ApiKey, Organization
    from tenants.services import api_key_create, api_key_revoke

    alpha, ok_a, _ = await _connect(
        f"/ws/orgs/alpha/audit/?ticket={await _ticket('alpha', world.alpha.users['admin'])}"
    )
    bravo, ok_b, _ = await _connect(
        f"/ws/orgs/bravo/audit/?ticket={await _ticket('bravo', world.bravo.users['admin'])}"
    )
    assert ok_a and ok_b

    def rolled_back_then_created():
        org = Organization.objects.get(slug="alpha")
        try:
            with transaction.atomic():
                api_key_create(org=org, name="never", role="member", creator_role="owner")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        key, _ = api_key_create(org=org, name="live-feed", role="member", creator_role="owner")
        return key

    key = await database_sync_to_async(rolled_back_then_created)()
    try:
        frame = await alpha.receive_json_from(timeout=5)
        # The rolled-back key was never announced: the first frame is the committed one.
        assert frame["type"] == "audit.event"
        assert (frame["action"], frame["target"]) == ("api_key.created", key.prefix)
        assert frame["details"] == {"name": "live-feed", "role": "member"}
        assert await bravo.receive_nothing(timeout=0.5)
    finally:
        await database_sync_to_async(api_key_revoke)(key=key, actor_role="owner")
        await database_sync_to_async(ApiKey.objects.filter(pk=key.pk).delete)()
    assert (await alpha.receive_json_from(timeout=5))["action"] == "api_key.revoked"
    await alpha.disconnect()
    await bravo.disconnect()
