"""Chunked request bodies on every HTTP surface, through the ASGI application `make run` serves.

httpx sends a generator body as `Transfer-Encoding: chunked` with no Content-Length, one ASGI
message per chunk, which is what uvicorn hands the application for `curl -H 'Transfer-Encoding:
chunked'`.
"""

from __future__ import annotations

import json

import httpx
import pytest
from asgiref.sync import sync_to_async
from django_tenants.utils import schema_context

from chat.models import Message

BASE = "/api/v1/orgs/alpha"


async def _in_alpha(fn):
    def call():
        with schema_context("org_alpha"):
            return fn()

    return await sync_to_async(call)()


def _chunks(payload: bytes, size: int = 5):
    async def gen():
        for i in range(0, len(payload), size):
            yield payload[i : i + size]

    return gen()


@pytest.fixture
def asgi():
    from cadence_site.asgi import application

    def client(key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://localhost",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )

    return client


async def test_a_chunked_message_is_read_whole_by_the_rest_api(world, chat_orchestrator, asgi):
    async with asgi(world.alpha.keys["member"]) as client:
        created = await client.post(
            f"{BASE}/conversations/",
            content=_chunks(json.dumps({"orchestrator": "chatbot"}).encode()),
        )
        assert created.status_code == 201, created.text
        conversation = created.json()["id"]
        response = await client.post(
            f"{BASE}/conversations/{conversation}/messages/",
            content=_chunks(b'{"content":"hi there"}'),
        )

    assert response.status_code == 201, response.text
    assert response.json()["reply"]["content"] == "Offline model. You said: hi there"
    assert (
        await _in_alpha(
            lambda: Message.objects.get(conversation_id=conversation, role="user").content
        )
        == "hi there"
    )


async def test_a_chunked_completion_is_read_by_v1(world, chat_orchestrator, asgi):
    async with asgi(world.alpha.keys["member"]) as client:
        response = await client.post(
            "/v1/chat/completions",
            content=_chunks(
                json.dumps(
                    {"model": "chatbot", "messages": [{"role": "user", "content": "chunks"}]}
                ).encode()
            ),
        )

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == (
        "Offline model. You said: chunks"
    )


async def test_a_chunked_body_over_the_limit_is_413_on_every_surface(
    world, committed_db, asgi, settings
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"name": "x" * 2000, "provider": "offline", "model": "m"}).encode()

    async with asgi(world.alpha.keys["admin"]) as client:
        rest = await client.post(f"{BASE}/llm-configs/", content=_chunks(body, 100))
        v1 = await client.post("/v1/chat/completions", content=_chunks(body, 100))
        page = await client.post("/orgs/alpha/admin/login/", content=_chunks(body, 100))

    assert rest.status_code == 413
    assert rest.json() == {
        "error": {
            "code": "payload_too_large",
            "message": "The request body exceeds the limit of 1000 bytes.",
            "details": {"limit_bytes": 1000},
        }
    }
    assert v1.status_code == 413
    assert v1.json()["error"]["code"] == "payload_too_large"
    assert v1.json()["error"]["type"] == "invalid_request_error"
    assert page.status_code == 413
    from orchestrators.models import LLMConfig

    assert not await _in_alpha(LLMConfig.objects.filter(name__startswith="xxx").exists)


async def test_a_chunked_body_within_the_limit_is_not_refused(world, committed_db, asgi, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"name": "chunked-cfg", "provider": "offline", "model": "m"}).encode()

    async with asgi(world.alpha.keys["admin"]) as client:
        response = await client.post(f"{BASE}/llm-configs/", content=_chunks(body, 7))
        assert response.status_code == 201, response.text
        assert response.json()["name"] == "chunked-cfg"
        assert (
            await client.delete(f"{BASE}/llm-configs/{response.json()['id']}/")
        ).status_code == 204
