"""Bad input is a 400 naming the place, on every surface: path, query, JSON bodies, /v1, frames."""

from __future__ import annotations

import json

import httpx
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from cadence_site.asgi import application
from cadence_site.inputguard import InputError, json_depth_exceeds, json_loads
from cadence_site.testing import ws_connect

DEEP = "[" * 5000 + "]" * 5000


# --- the guard itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "deeper"),
    [
        ("[" * 64 + "]" * 64, False),
        ("[" * 65 + "]" * 65, True),
        (DEEP, True),
        ('{"a": [' + ",".join(["{}"] * 500) + "]}", False),  # many brackets, shallow
        ('["' + "[" * 500 + '"]', False),  # brackets inside a string do not nest
        ("[[[[", False),  # malformed: the parser says so
    ],
)
def test_depth_is_measured_on_brackets_outside_strings(text, deeper):
    assert json_depth_exceeds(text, 64) is deeper


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        (DEEP, "json_too_deep", None),
        ('{"name": "a\\u0000b"}', "invalid_characters", "name"),
        (
            '{"messages": [{"content": "x"}, {"content": "\\ud800"}]}',
            "invalid_characters",
            "messages[1].content",
        ),
        ('{"a\\u0000": 1}', "invalid_characters", "a\x00"),
        ('"\\udfff"', "invalid_characters", "body"),
        (b'{"a": "\xff"}', "malformed_json", None),
        ("{oops", "malformed_json", None),
    ],
)
def test_refusals_name_the_field(raw, code, field):
    with pytest.raises(InputError) as refused:
        json_loads(raw)

    assert refused.value.code == code
    if field is not None and code == "invalid_characters" and "\x00" not in field:
        assert refused.value.field == field


def test_paired_surrogates_and_plain_escapes_are_fine():
    assert json_loads('{"emoji": "\\ud83d\\ude00", "nl": "a\\nb"}') == {"emoji": "😀", "nl": "a\nb"}


# --- REST ---------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/orgs/al%00pha/", "path"),
        ("/api/v1/orgs/alpha/conversations/?limit=1%00", "query.limit"),
        ("/v1/models?x=%00", "query.x"),
    ],
)
def test_nul_in_path_or_query_is_a_400_naming_it(world, as_key, path, field):
    response = as_key(world.alpha.keys["admin"]).get(path)

    assert response.status_code == 400
    body = response.json()["error"]
    assert body["code"] == "invalid_characters"
    assert (body.get("details") or {}).get("field", body.get("param")) == field


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ('{"name": "a\\u0000b", "role": "member"}', "invalid_characters", "name"),
        ('{"name": "\\ud800", "role": "member"}', "invalid_characters", "name"),
        (DEEP, "json_too_deep", None),
    ],
)
def test_bad_json_bodies_are_a_400_and_change_nothing(world, as_key, body, code, field):
    from tenants.models import ApiKey

    before = ApiKey.objects.count()

    response = as_key(world.alpha.keys["admin"]).generic(
        "POST", "/api/v1/orgs/alpha/api-keys/", body, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["details"].get("field") == field
    assert ApiKey.objects.count() == before


# --- /v1 through the ASGI application ------------------------------------------------------------


async def _v1(key: str, body: str) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://127.0.0.1"
    ) as client:
        return await client.post(
            "/v1/chat/completions",
            content=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (
            '{"model": "m", "messages": [{"role": "user", "content": "hi\\u0000"}]}',
            "invalid_characters",
            "messages[0].content",
        ),
        ('{"model": "m\\udc00", "messages": []}', "invalid_characters", "model"),
        (DEEP, "json_too_deep", None),
    ],
)
async def test_openai_surface_refuses_bad_input_in_its_own_error_shape(
    world, committed_db, body, code, param
):
    response = await _v1(world.alpha.keys["member"], body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")


# --- frames -------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('{"type": "audit.list", "limit": 1, "x": "\\u0000"}', "invalid_characters"),
        ('{"type": "audit.list\\ud800"}', "invalid_characters"),
        (DEEP, "json_too_deep"),
        ("\x00", "malformed_json"),
    ],
)
async def test_bad_frames_get_an_error_frame_and_the_socket_stays_open(
    world, committed_db, frame, code
):
    from tenants import tickets
    from tenants.resolution import org_by_slug

    ticket = await database_sync_to_async(tickets.ticket_issue)(
        org=await database_sync_to_async(org_by_slug)("alpha"), user=world.alpha.users["admin"]
    )
    socket = WebsocketCommunicator(
        application, f"/ws/orgs/alpha/audit/?ticket={ticket}", headers=[(b"host", b"127.0.0.1")]
    )
    assert (await ws_connect(socket))[0]

    await socket.send_to(text_data=frame)
    error = await socket.receive_json_from(timeout=5)
    await socket.send_to(text_data=json.dumps({"type": "audit.list", "limit": 1}))
    after = await socket.receive_json_from(timeout=5)

    assert (error["type"], error["code"]) == ("error", code)
    assert after["type"] == "audit.events"
    await socket.disconnect()


@pytest.mark.asyncio
async def test_nul_in_a_socket_path_closes_with_4400(world, committed_db):
    socket = WebsocketCommunicator(
        application, "/ws/orgs/al\x00pha/audit/", headers=[(b"host", b"127.0.0.1")]
    )

    opened, code = await ws_connect(socket)

    assert (opened, code) == (False, 4400)
