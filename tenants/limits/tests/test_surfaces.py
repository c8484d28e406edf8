"""Rate limits on every surface: REST under /api/v1/orgs/<slug>/, tickets, login, socket frames."""

from __future__ import annotations

import json

import pytest
from channels.testing import WebsocketCommunicator

from cadence_site.asgi import application
from tenants.limits.tests.conftest import overridden

pytestmark = pytest.mark.usefixtures("empty_buckets")


def test_rest_calls_past_the_burst_are_429_with_headers_in_the_error_shape(world, limited, as_key):
    client = as_key(world.alpha.keys["member"])
    with limited(world.alpha.org, requests_per_minute=2):
        first = client.get("/api/v1/orgs/alpha/limits/")
        second = client.get("/api/v1/orgs/alpha/conversations/")
        refused = client.get("/api/v1/orgs/alpha/limits/")

    assert (first.status_code, second.status_code) == (200, 200)
    assert first["X-RateLimit-Limit"] == "2"
    assert first["X-RateLimit-Remaining"] == "1"
    assert refused.status_code == 429
    assert 29 <= int(refused["Retry-After"]) <= 30
    assert refused["X-RateLimit-Remaining"] == "0"
    assert 59 <= int(refused["X-RateLimit-Reset"]) <= 60
    error = refused.json()["error"]
    assert error["code"] == "rate_limited"
    assert error["details"]["bucket"] == "organization"
    assert "2 requests per minute" in error["message"]


def test_outsiders_and_other_organizations_spend_nothing_of_an_organizations_budget(
    world, limited, as_key, as_user, api
):
    with limited(world.alpha.org, requests_per_minute=1):
        for _ in range(3):
            assert as_key(world.bravo.keys["owner"]).get("/api/v1/orgs/alpha/").status_code == 404
        api.credentials()
        for _ in range(3):
            assert as_user(world.outsider).get("/api/v1/orgs/alpha/").status_code == 404
        api.logout()
        # Bravo's own calls use Bravo's bucket.
        assert as_key(world.bravo.keys["owner"]).get("/api/v1/orgs/bravo/").status_code == 200
        assert as_key(world.alpha.keys["viewer"]).get("/api/v1/orgs/alpha/").status_code == 200
        assert as_key(world.alpha.keys["viewer"]).get("/api/v1/orgs/alpha/").status_code == 429


def test_an_api_keys_own_limit_applies_on_top_of_the_organizations(world, limited, as_key):
    from tenants.limits.models import ApiKeyLimits

    key_id = world.alpha.key_ids["member"]
    with limited(world.alpha.org, requests_per_minute=100):
        ApiKeyLimits.objects.create(api_key_id=key_id, requests_per_minute=1)
        try:
            member = as_key(world.alpha.keys["member"])
            assert member.get("/api/v1/orgs/alpha/limits/").status_code == 200
            refused = member.get("/api/v1/orgs/alpha/limits/")
            admin = as_key(world.alpha.keys["admin"]).get("/api/v1/orgs/alpha/limits/")
        finally:
            ApiKeyLimits.objects.filter(api_key_id=key_id).delete()

    assert refused.status_code == 429
    assert refused.json()["error"]["details"]["bucket"] == "api key"
    assert admin.status_code == 200


def test_ticket_issue_has_its_own_bucket_per_caller(world, limited, as_key, settings):
    settings.CADENCE_SCOPE_LIMITS = {"tickets": 2}
    with limited(world.alpha.org, requests_per_minute=100):
        viewer = as_key(world.alpha.keys["viewer"])
        statuses = [viewer.post("/api/v1/orgs/alpha/ws-tickets/").status_code for _ in range(3)]
        other = as_key(world.alpha.keys["member"]).post("/api/v1/orgs/alpha/ws-tickets/")
        refused = as_key(world.alpha.keys["viewer"]).post("/api/v1/orgs/alpha/ws-tickets/")

    assert statuses == [201, 201, 429]
    assert other.status_code == 201
    assert refused.json()["error"]["details"]["bucket"] == "tickets"


def test_login_is_slowed_per_account(world, db, client, settings):
    settings.CADENCE_LOGIN_PER_ACCOUNT = 3
    statuses = [
        client.post(
            "/accounts/login/", {"username": "alpha-member", "password": f"wrong-{i}"}
        ).status_code
        for i in range(3)
    ]
    refused = client.post("/accounts/login/", {"username": "ALPHA-member", "password": "pw-member"})
    other_account = client.post(
        "/accounts/login/", {"username": "alpha-viewer", "password": "pw-viewer"}
    )

    assert statuses == [200, 200, 200]  # the form again, with its error
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert "an account may try to log in 3 times per minute" in refused.content.decode()
    assert other_account.status_code == 302


def test_login_is_slowed_per_client_address_across_accounts(world, db, client, settings):
    settings.CADENCE_LOGIN_PER_ADDRESS = 4
    statuses = [
        client.post(
            "/admin/login/", {"username": f"guess-{i}", "password": "x"}, REMOTE_ADDR="10.0.0.9"
        ).status_code
        for i in range(5)
    ]
    elsewhere = client.post(
        "/admin/login/", {"username": "guess-9", "password": "x"}, REMOTE_ADDR="10.0.0.10"
    )

    assert statuses == [200, 200, 200, 200, 429]
    assert elsewhere.status_code == 200


def _ticket(slug: str, user) -> str:
    from tenants.resolution import org_by_slug
    from tenants.tickets import ticket_issue

    return ticket_issue(org=org_by_slug(slug), user=user)


@pytest.mark.asyncio
async def test_socket_frames_past_the_limit_get_an_error_frame_and_the_socket_stays_open(
    world, committed_db, settings
):
    from asgiref.sync import sync_to_async

    settings.CADENCE_SCOPE_LIMITS = {"frames": 2}
    override = overridden(world.alpha.org, requests_per_minute=100)
    await sync_to_async(override.__enter__)()
    try:
        ticket = await sync_to_async(_ticket)("alpha", world.alpha.users["admin"])
        communicator = WebsocketCommunicator(
            application,
            f"/ws/orgs/alpha/audit/?ticket={ticket}",
            headers=[(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")],
        )
        connected, _ = await communicator.connect()
        assert connected
        frames = []
        for _ in range(3):
            await communicator.send_to(text_data=json.dumps({"type": "audit.list", "limit": 1}))
            frames.append(json.loads(await communicator.receive_from(timeout=5)))
        await communicator.disconnect()
    finally:
        await sync_to_async(override.__exit__)(None, None, None)

    assert [f["type"] for f in frames] == ["audit.events", "audit.events", "error"]
    assert frames[2]["code"] == "rate_limited"
    assert frames[2]["limit"] == 2
    assert 29 <= frames[2]["retry_after"] <= 30
