"""Team scoping where another thread answers: `/v1` (async views) and the chat WebSocket. Their
database calls run on other connections, so the data is committed (and restored) here."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django_tenants.utils import schema_context

from cadence_site.asgi import application
from cadence_site.testing import ws_connect
from tenants.teams.tests.scoping_world import SLUGS, build, cleanup

SUP, SALES, ORGWIDE = SLUGS["support"], SLUGS["sales"], SLUGS[None]


@pytest.fixture(scope="module")
def tw(module_world, django_db_blocker):
    with django_db_blocker.unblock():
        made = build(module_world)
    yield made
    with django_db_blocker.unblock():
        cleanup()


# --- /v1 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("k_sup_member", [SUP, ORGWIDE]),
        ("k_sales_member", [SALES, ORGWIDE]),
        ("sales_limited_admin", [SALES, ORGWIDE]),
        ("sales_limited_member", [SALES, ORGWIDE]),
    ],
)
def test_v1_models_lists_what_the_key_may_use(client, committed_db, tw, key, expected):
    response = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {tw.keys[key]}")

    assert response.status_code == 200
    assert sorted(m["id"] for m in response.json()["data"] if m["id"].startswith("ts-")) == sorted(
        expected
    )
    detail = client.get(f"/v1/models/{SUP}", HTTP_AUTHORIZATION=f"Bearer {tw.keys[key]}")
    assert detail.status_code == (200 if SUP in expected else 404)


def test_v1_models_for_an_unlimited_admin_key_lists_every_team(client, committed_db, world, tw):
    response = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {world.alpha.keys['admin']}")

    assert sorted(m["id"] for m in response.json()["data"] if m["id"].startswith("ts-")) == sorted(
        [SUP, SALES, ORGWIDE]
    )


@pytest.mark.parametrize("key", ["k_sales_member", "sales_limited_admin", "sales_limited_member"])
def test_v1_completions_on_another_teams_model_is_404_and_runs_nothing(
    client, committed_db, tw, key
):
    from engine.models import Run

    with schema_context("org_alpha"):
        runs = Run.objects.count()
    for model in (SUP, str(tw.bots["support"].pk)):
        response = client.post(
            "/v1/chat/completions",
            json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {tw.keys[key]}",
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"
    with schema_context("org_alpha"):
        assert Run.objects.count() == runs


@pytest.mark.parametrize("key", ["k_sales_member", "sales_limited_admin", "sales_limited_member"])
def test_v1_responses_on_another_teams_model_is_404_and_runs_nothing(client, committed_db, tw, key):
    from engine.models import Run

    with schema_context("org_alpha"):
        runs = Run.objects.count()
    for model in (SUP, str(tw.bots["support"].pk)):
        response = client.post(
            "/v1/responses",
            json.dumps({"model": model, "input": "hi"}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {tw.keys[key]}",
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"
    with schema_context("org_alpha"):
        assert Run.objects.count() == runs


def test_v1_responses_on_the_teams_model_answers(client, committed_db, tw):
    response = client.post(
        "/v1/responses",
        json.dumps({"model": SUP, "input": "hi"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {tw.keys['k_sup_member']}",
    )

    assert response.status_code == 200, response.content
    message = response.json()["output"][0]
    assert message["content"][0]["text"] == "Offline model. You said: hi"


def test_v1_completions_on_the_teams_model_answers_and_records_the_team(client, committed_db, tw):
    from engine.models import Run

    response = client.post(
        "/v1/chat/completions",
        json.dumps({"model": SUP, "messages": [{"role": "user", "content": "hi"}]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {tw.keys['k_sup_member']}",
    )

    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == "Offline model. You said: hi"
    run_id = response.json()["id"].removeprefix("chatcmpl-")
    with schema_context("org_alpha"):
        assert Run.objects.get(pk=run_id).team_id == tw.teams["support"].pk


# --- the chat WebSocket -----------------------------------------------------------------------


def _conversation(tw, bot: str, **owner) -> str:
    from chat.models import Conversation

    with schema_context("org_alpha"):
        made = Conversation.objects.create(
            orchestrator=tw.bots[bot], team=tw.teams.get(bot), **owner
        )
        return str(made.id)


def _principal_ticket(principal) -> str:
    from tenants import tickets
    from tenants.resolution import org_by_slug

    return tickets.ticket_issue(org=org_by_slug("alpha"), user=principal)


def _key_principal(key_id: str):
    from tenants.authentication import ApiKeyPrincipal
    from tenants.models import ApiKey

    return ApiKeyPrincipal(ApiKey.objects.get(pk=key_id))


async def _open(conversation_id: str, principal):
    ticket = await database_sync_to_async(_principal_ticket)(principal)
    communicator = WebsocketCommunicator(
        application,
        f"/ws/orgs/alpha/conversations/{conversation_id}/?ticket={ticket}",
        headers=[(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")],
    )
    connected, code = await ws_connect(communicator)
    return communicator, connected, code


def _leave_support(tw) -> list:
    from tenants.teams.models import TeamMembership

    with schema_context("org_alpha"):
        rows = list(TeamMembership.objects.filter(user_id=tw.users["sup_member"].pk))
        TeamMembership.objects.filter(pk__in=[r.pk for r in rows]).delete()
    return rows


def _rejoin(rows) -> None:
    with schema_context("org_alpha"):
        for row in rows:
            row.save(force_insert=True)


def _messages(conversation_id: str) -> int:
    from chat.models import Message

    with schema_context("org_alpha"):
        return Message.objects.filter(conversation_id=conversation_id).count()


@pytest.mark.asyncio
async def test_the_socket_refuses_outsiders_of_the_team(committed_db, tw, world):
    mine = await database_sync_to_async(_conversation)(
        tw, "support", owner_user_id=tw.users["sup_member"].pk
    )
    # A conversation a team-limited key held with support's orchestrator (made before any rule
    # could refuse it): the key's team is sales, so it is not there for the key.
    keys = await database_sync_to_async(_conversation)(
        tw, "support", owner_api_key_id=tw.key_ids["sales_limited_member"]
    )
    limited = await database_sync_to_async(_key_principal)(tw.key_ids["sales_limited_member"])

    owner_tab, owner_ok, _ = await _open(mine, tw.users["sup_member"])
    refused = {
        "another team's member": await _open(mine, tw.users["sales_member"]),
        "a member of no team": await _open(mine, world.alpha.users["member"]),
        "a team-limited key": await _open(keys, limited),
    }

    assert owner_ok
    await owner_tab.disconnect()
    assert {name: (ok, code) for name, (_, ok, code) in refused.items()} == {
        name: (False, 4404) for name in refused
    }
    assert await database_sync_to_async(_messages)(mine) == 0


@pytest.mark.asyncio
async def test_leaving_the_team_ends_the_socket_at_its_next_frame(committed_db, tw):
    conversation = await database_sync_to_async(_conversation)(
        tw, "support", owner_user_id=tw.users["sup_member"].pk
    )
    tab, connected, _ = await _open(conversation, tw.users["sup_member"])
    assert connected
    rows = await database_sync_to_async(_leave_support)(tw)
    try:
        await tab.send_json_to({"type": "message", "content": "still here?"})
        frame = await tab.receive_json_from(timeout=5)
        refused_again, ok, code = await _open(conversation, tw.users["sup_member"])
    finally:
        await database_sync_to_async(_rejoin)(rows)
        await tab.disconnect()

    assert (frame["type"], frame["code"]) == ("error", "conversation_not_found")
    assert (ok, code) == (False, 4404)
    assert await database_sync_to_async(_messages)(conversation) == 0


# --- open sockets follow team changes (tenants/ws_access.py) ----------------------------------


async def _closed_within(communicator, seconds: float) -> tuple[dict, float]:
    import time

    started = time.monotonic()
    while True:
        message = await communicator.receive_output(timeout=seconds)
        if message["type"] == "websocket.close":
            return message, time.monotonic() - started


def _remove_from_support(tw) -> None:
    from tenants.resolution import org_by_slug
    from tenants.teams.services import team_member_remove

    with schema_context("org_alpha"):
        team_member_remove(
            org=org_by_slug("alpha"),
            team=tw.teams["support"],
            user_id=tw.users["sup_member"].pk,
            org_role="owner",
            actor=None,
        )


def _readd_to_support(tw) -> None:
    from tenants.teams.models import TeamMembership

    with schema_context("org_alpha"):
        TeamMembership.objects.get_or_create(
            team=tw.teams["support"], user_id=tw.users["sup_member"].pk
        )


def _share(tw, *, remove: bool = False) -> None:
    from tenants.teams.services import resource_share_remove, resource_share_set

    with schema_context("org_alpha"):
        if remove:
            resource_share_remove(
                kind="orchestrator", obj=tw.bots["sales"], team=tw.teams["support"]
            )
        else:
            resource_share_set(
                kind="orchestrator", obj=tw.bots["sales"], team=tw.teams["support"], level="use"
            )


@pytest.mark.asyncio
async def test_leaving_the_team_closes_the_open_chat_socket_within_2_s(committed_db, tw):
    conversation = await database_sync_to_async(_conversation)(
        tw, "support", owner_user_id=tw.users["sup_member"].pk
    )
    tab, connected, _ = await _open(conversation, tw.users["sup_member"])
    assert connected
    try:
        await database_sync_to_async(_remove_from_support)(tw)
        closed, elapsed = await _closed_within(tab, 2)
    finally:
        await database_sync_to_async(_readd_to_support)(tw)

    assert (closed["code"], closed["reason"]) == (4404, "conversation_not_found")
    assert elapsed < 2
    assert await database_sync_to_async(_messages)(conversation) == 0


@pytest.mark.asyncio
async def test_unsharing_the_orchestrator_closes_the_other_teams_open_socket_within_2_s(
    committed_db, tw
):
    await database_sync_to_async(_share)(tw)
    conversation = await database_sync_to_async(_conversation)(
        tw, "sales", owner_user_id=tw.users["sup_member"].pk
    )
    tab, connected, _ = await _open(conversation, tw.users["sup_member"])
    # Someone else's socket on a conversation that stays visible to them stays open.
    own = await database_sync_to_async(_conversation)(
        tw, "sales", owner_user_id=tw.users["sales_member"].pk
    )
    sales_tab, sales_connected, _ = await _open(own, tw.users["sales_member"])
    assert connected and sales_connected
    try:
        await database_sync_to_async(_share)(tw, remove=True)
        closed, elapsed = await _closed_within(tab, 2)
        assert await sales_tab.receive_nothing(timeout=1)
    finally:
        await sales_tab.disconnect()

    assert (closed["code"], closed["reason"]) == (4404, "conversation_not_found")
    assert elapsed < 2


def _running_run(tw) -> str:
    from engine.models import Run

    with schema_context("org_alpha"):
        run = Run.objects.create(
            orchestrator=tw.bots["support"],
            orchestrator_slug=tw.bots["support"].slug,
            team=tw.teams["support"],
            trigger="rest",
            status="running",
            owner_user_id=tw.users["sup_member"].pk,
        )
        return str(run.id)


@pytest.mark.asyncio
async def test_leaving_the_team_closes_the_open_run_socket_within_2_s(committed_db, tw):
    run_id = await database_sync_to_async(_running_run)(tw)
    ticket = await database_sync_to_async(_principal_ticket)(tw.users["sup_member"])
    socket = WebsocketCommunicator(
        application,
        f"/ws/orgs/alpha/runs/{run_id}/?ticket={ticket}",
        headers=[(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")],
    )
    connected, _ = await ws_connect(socket)
    assert connected
    try:
        await database_sync_to_async(_remove_from_support)(tw)
        closed, elapsed = await _closed_within(socket, 2)
    finally:
        await database_sync_to_async(_readd_to_support)(tw)

    assert (closed["code"], closed["reason"]) == (4404, "run_not_found")
    assert elapsed < 2
