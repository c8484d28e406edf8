"""Secrets never leave memory (issue 10, item 3): a canary LLM key and a canary plugin secret,
shaped so that no redaction pattern would catch them, are used by real turns through every
trigger (REST invoke, /v1/chat/completions streamed, a REST conversation message, the chat
WebSocket), watched on the run socket, replayed (from the record and live), exported (JSON, OTLP),
bundled and alerted on (a local webhook), and then searched for everywhere the platform writes or
sends: every text/json column of the tenant and public schemas, the files under the storage root,
every log record (DEBUG, root logger), every socket frame and SSE chunk, every API response body,
every alert delivery, the model requests' bodies and the test's Redis database. They must be found
only where they belong: the provider's Authorization header and the tool upstream's header.

A control value (in the user's question and the tool's URL) must be found in each kind of place,
so that a search that sees nothing cannot pass. Two tool upstreams: a plain one, and one that
echoes the credential it got in its answer (httpbin, "invalid key …" errors) while the provider
refuses the key naming it in its error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import httpx
import pytest
import redis
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django_tenants.utils import schema_context

from chat.tests.test_ws import _open as _open_chat
from chat.tests.test_ws import _until_done
from engine.alerts.tests.conftest import clean_rules, make_rule, queued, receiver  # noqa: F401
from engine.runs.tests.test_live import _open, _to_the_close
from plugins.tests.conftest import package, plugin_storage  # noqa: F401

BASE = "/api/v1/orgs/alpha"
PLUGIN_ID = "com.canary.vault"
SLUG = "canary"

LLM_KEY = f"canary-LLMKEY-{uuid.uuid4().hex}"
PLUGIN_SECRET = f"canary-PLUGINSECRET-{uuid.uuid4().hex}"
CANARIES = (LLM_KEY, PLUGIN_SECRET)
# Not a secret: the user's question and the tool's URL carry it, so every place searched must find it (a search
# that cannot see what a run wrote would find no secret either).
CONTROL = f"control-{uuid.uuid4().hex}"
NAMES = {LLM_KEY: "llm key", PLUGIN_SECRET: "plugin secret", CONTROL: "control"}
# Past the recorder's INLINE_BYTES, so that the messages are kept whole in file storage too.
QUESTION = f"Weather in Lisbon? {CONTROL} " + "Please be thorough. " * 1000


def _manifest(server) -> dict:
    return {
        "schema_version": 1,
        "id": PLUGIN_ID,
        "name": "Vault",
        "version": "1.0.0",
        "description": "Looks things up behind a key.",
        "kind": "tenant",
        "provides": {
            "tools": [
                {
                    "name": "lookup",
                    "type": "http",
                    "description": "Look a city up.",
                    "method": "GET",
                    "url": server.base_url + "/lookup/{city}",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string", "maxLength": 50}},
                        "required": ["city"],
                        "additionalProperties": False,
                    },
                    # Not "Authorization: Bearer": a header no pattern would recognise.
                    "headers": {"X-Vault-Credential": "{settings.credential}"},
                }
            ]
        },
        "settings": {
            "type": "object",
            "properties": {
                "credential": {"type": "string", "writeOnly": True, "minLength": 4},
                "region": {"type": "string"},
            },
            "required": ["credential"],
            "additionalProperties": False,
        },
        "capabilities": {"egress": ["127.0.0.1"], "secrets": ["credential"]},
    }


def _run_async(coroutine) -> None:
    """On a thread of its own, as an ASGI server runs the application (an async_to_sync from
    the test's thread would nest the views' own async_to_sync calls into a deadlock)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result(timeout=120)


def _leaks(text: str) -> list[str]:
    """The markers `text` contains: the two canaries and the control."""
    return [name for value, name in NAMES.items() if value in text]


def _secret(found: str) -> bool:
    return "llm key" in found or "plugin secret" in found


def _cleanup() -> None:
    from engine.models import Run
    from orchestrators.models import LLMConfig, OrchestratorInstance
    from plugins.models import PluginVersion

    with schema_context("org_alpha"):
        Run.objects.filter(orchestrator_slug=SLUG).delete()
        OrchestratorInstance.objects.filter(slug=SLUG).delete()
        LLMConfig.objects.filter(name=SLUG).delete()
        PluginVersion.objects.filter(plugin_id=PLUGIN_ID).delete()


class _Upstream(BaseHTTPRequestHandler):
    """The plugin tool's upstream: records each request; `echo` ones answer with the headers they
    got, as httpbin does and as many APIs do in an error ("invalid key <the key>")."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        self.server.requests.append({"path": self.path, "headers": dict(self.headers)})
        answer = {"ok": True, "path": self.path}
        if self.server.echo:
            answer["headers"] = dict(self.headers)
            answer["error"] = f"invalid credential {self.headers.get('X-Vault-Credential')}"
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture(params=["plain", "echo"])
def upstream(request, settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.requests, server.echo = [], request.param == "echo"
    server.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = [*settings.CADENCE_EGRESS_ALLOWED_HOSTS, "127.0.0.1"]
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def eager():
    from cadence_site.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def run_log_at_debug():
    """Every line logged during a run is the run's, DEBUG included (httpx, the OpenAI SDK…)."""
    from engine.runs.runlog import RunLogHandler

    handlers = [h for h in logging.getLogger().handlers if isinstance(h, RunLogHandler)]
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(logging.DEBUG)
    yield
    for handler, level in zip(handlers, levels, strict=True):
        handler.setLevel(level)


def _text_columns(schema: str) -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.table_name, c.column_name
            FROM information_schema.columns c
            JOIN information_schema.tables t
              ON t.table_schema = c.table_schema AND t.table_name = c.table_name
            WHERE c.table_schema = %s AND t.table_type = 'BASE TABLE'
              AND c.data_type IN ('text', 'character varying', 'json', 'jsonb', 'bytea',
                                  'character', 'ARRAY', 'USER-DEFINED')
            """,
            [schema],
        )
        return cursor.fetchall()


def _database_leaks() -> list[str]:
    found = []
    with connection.cursor() as cursor:
        for schema in ("org_alpha", "public"):
            columns = _text_columns(schema)
            assert len(columns) > 20, (schema, columns)
            for table, column in columns:
                for value in NAMES:
                    cursor.execute(
                        f'SELECT count(*) FROM "{schema}"."{table}" '  # noqa: S608 - catalog names
                        f'WHERE "{column}"::text LIKE %s',
                        [f"%{value}%"],
                    )
                    if cursor.fetchone()[0]:
                        found.append(f"{schema}.{table}.{column}: {NAMES[value]}")
    return found


def _redis_leaks() -> list[str]:
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    found = []
    keys = list(client.scan_iter(count=500))
    for key in keys:
        kind = client.type(key).decode()
        if kind == "string":
            blobs = [client.get(key) or b""]
        elif kind == "stream":
            blobs = [repr(fields) for _, fields in client.xrange(key)]
        elif kind == "list":
            blobs = client.lrange(key, 0, -1)
        elif kind == "hash":
            blobs = [repr(client.hgetall(key))]
        elif kind == "set":
            blobs = [repr(client.smembers(key))]
        elif kind == "zset":
            blobs = [repr(client.zrange(key, 0, -1))]
        else:
            blobs = []
        text = (
            key.decode(errors="replace")
            + " "
            + " ".join(
                b.decode(errors="replace") if isinstance(b, bytes) else str(b) for b in blobs
            )
        )
        if _leaks(text):
            found.append(f"redis {key!r} ({kind}): {_leaks(text)}")
    return found


def _file_leaks(root) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes().decode(errors="replace")
            if _leaks(data):
                found.append(f"file {path.relative_to(root)}: {_leaks(data)}")
    return found


def test_canary_secrets_are_found_nowhere_but_their_upstreams(
    world,
    committed_db,
    openai_server,
    upstream,
    plugin_storage,  # noqa: F811
    eager,
    run_log_at_debug,
    as_key,
    clean_rules,  # noqa: F811
    make_rule,  # noqa: F811
    queued,  # noqa: F811
    receiver,  # noqa: F811
    django_capture_on_commit_callbacks,
    caplog,
):
    caplog.set_level(logging.DEBUG)
    _cleanup()
    bodies: list[tuple[str, str]] = []  # (what, text) of every response and frame received

    def keep(what: str, response) -> dict | list:
        text = response.content.decode() if hasattr(response, "content") else response.text
        bodies.append((what, text))
        assert response.status_code < 400, (what, response.status_code, text[:500])
        return json.loads(text) if text and text[0] in "[{" else {}

    try:
        admin = as_key(world.alpha.keys["admin"])
        upload = admin.post(
            f"{BASE}/plugins/",
            {"package": SimpleUploadedFile("p.zip", package(_manifest(upstream)))},
            format="multipart",
        )
        keep("plugin upload", upload)
        config = keep(
            "llm config create",
            admin.post(
                f"{BASE}/llm-configs/",
                {
                    "name": SLUG,
                    "provider": "openai_compatible",
                    "base_url": openai_server.base_url,
                    "model": "gpt-test",
                    "api_key": LLM_KEY,
                    "max_retries": 0,
                },
                format="json",
            ),
        )
        with django_capture_on_commit_callbacks(execute=True):
            created = admin.post(
                f"{BASE}/orchestrators/",
                {
                    "slug": SLUG,
                    "name": "Canary",
                    "llm_config": config["id"],
                    "plugins": [
                        {
                            "id": PLUGIN_ID,
                            "version": ">=1,<2",
                            "settings": {"credential": PLUGIN_SECRET, "region": "eu"},
                        }
                    ],
                },
                format="json",
            )
        orchestrator = keep("orchestrator create", created)
        detail = keep("orchestrator detail", admin.get(f"{BASE}/orchestrators/{SLUG}/"))
        assert detail["status"] == "ready", detail
        assert detail["plugins"][0]["secrets_set"] == ["credential"]
        # A run's log lines (and the server's log while it runs) hide both, whatever their shape.
        from engine.runs.pipeline import _secrets
        from orchestrators.models import OrchestratorInstance
        from orchestrators.services import runtime_config

        with schema_context("org_alpha"):
            built = runtime_config(OrchestratorInstance.objects.get(slug=SLUG), org_slug="alpha")
        hidden = _secrets(SimpleNamespace(runtime=SimpleNamespace(config=built)))
        assert set(hidden) == {LLM_KEY, PLUGIN_SECRET}

        # Alerts, delivered to a local webhook: a failed run, and a pattern in its errors (the
        # echo variant's refused key fires both).
        make_rule(kind="run_failed", webhook_url=receiver.url)
        make_rule(kind="log_match", pattern="(?i)api key", webhook_url=receiver.url)

        def script_turn() -> None:
            openai_server.tool_call("lookup", {"city": CONTROL})
            openai_server.reply("Lisbon is sunny.")

        # 1. REST invoke.
        script_turn()
        invoked = keep(
            "invoke",
            admin.post(
                f"{BASE}/orchestrators/{orchestrator['id']}/invoke/",
                {"messages": [{"role": "user", "content": QUESTION}]},
                format="json",
            ),
        )
        assert invoked["tool_calls"][0]["name"] == "lookup", invoked
        if upstream.echo:  # the tool's result came back, the echoed credential replaced
            assert "invalid credential [redacted]" in json.dumps(invoked), invoked

        if upstream.echo:  # a provider refusing the key names it in its error, whole
            openai_server.error(401, message=f"Incorrect API key provided: {LLM_KEY}.")
            refused = admin.post(
                f"{BASE}/orchestrators/{orchestrator['id']}/invoke/",
                {"messages": [{"role": "user", "content": QUESTION}]},
                format="json",
            )
            bodies.append(("invoke refused", refused.content.decode()))
            assert refused.status_code >= 400, refused.content
            assert refused.json()["error"]["code"] == "llm_auth_failed", refused.content

        # 2. /v1/chat/completions, streamed; 3. a REST conversation message (ASGI, in process).
        async def over_asgi() -> None:
            from cadence_site.asgi import application

            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=application),
                base_url="http://localhost",
                headers={"Authorization": f"Bearer {world.alpha.keys['admin']}"},
                timeout=30,
            ) as client:
                script_turn()
                streamed = await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": SLUG,
                        "stream": True,
                        "messages": [{"role": "user", "content": QUESTION}],
                    },
                )
                keep("v1 stream", streamed)
                assert "data: [DONE]" in streamed.text, streamed.text[-300:]
                conversation = keep(
                    "conversation create",
                    await client.post(f"{BASE}/conversations/", json={"orchestrator": SLUG}),
                )
                script_turn()
                message = keep(
                    "conversation message",
                    await client.post(
                        f"{BASE}/conversations/{conversation['id']}/messages/",
                        json={"content": QUESTION},
                    ),
                )
                assert message["reply"]["content"] == "Lisbon is sunny.", message

        # 4. The chat WebSocket, in a conversation of the admin user's.
        from chat.models import Conversation

        with schema_context("org_alpha"):
            chat_id = str(
                Conversation.objects.create(
                    orchestrator=OrchestratorInstance.objects.get(slug=SLUG),
                    owner_user_id=world.alpha.users["admin"].pk,
                ).id
            )

        async def over_the_chat_socket() -> None:
            tab, connected, code = await _open_chat(chat_id, world.alpha.users["admin"])
            assert connected, code
            script_turn()
            await tab.send_json_to({"type": "message", "content": QUESTION})
            frames = await _until_done(tab, wait=20)
            await tab.disconnect()
            bodies.append(("chat socket", json.dumps(frames)))
            text = "".join(f["delta"] for f in frames if f["type"] == "token")
            assert text == "Lisbon is sunny.", frames

        _run_async(over_asgi())
        _run_async(over_the_chat_socket())

        runs = keep("runs list", admin.get(f"{BASE}/runs/?orchestrator={SLUG}"))["results"]
        assert len(runs) >= 4, runs
        run_ids = [run["id"] for run in runs]

        # Each run: detail, steps, every payload, logs, export (JSON and OTLP), bundle, lineage.
        tool_step = None
        for run_id in run_ids:
            keep("run detail", admin.get(f"{BASE}/runs/{run_id}/"))
            steps = keep("steps", admin.get(f"{BASE}/runs/{run_id}/steps/"))
            steps = steps["results"] if isinstance(steps, dict) else steps
            for step in steps:
                keep("payload", admin.get(f"{BASE}/runs/{run_id}/steps/{step['seq']}/payload/"))
                if step["kind"] == "tool_call" and tool_step is None:
                    tool_step = (run_id, step["parent"])
                lineage = admin.get(
                    f"{BASE}/runs/{run_id}/lineage/?step={step['seq']}&field=messages"
                )
                bodies.append(("lineage", lineage.content.decode()))
            keep("logs", admin.get(f"{BASE}/runs/{run_id}/logs/"))
            keep("export", admin.get(f"{BASE}/runs/{run_id}/export/"))
            keep("otlp", admin.get(f"{BASE}/runs/{run_id}/export/?as=otlp"))
            keep("bundle", admin.get(f"{BASE}/runs/{run_id}/bundle/"))
        assert tool_step and tool_step[1], tool_step

        # Replays of the step that made the tool call (the agent): from its record, then live
        # (the model is called with the key again, the tool with its credential again).
        run_id, agent = tool_step
        keep("replay", admin.post(f"{BASE}/runs/{run_id}/replay/", {"step": agent}, "json"))
        calls_before_replay = len(upstream.requests)
        script_turn()
        keep(
            "replay live",
            admin.post(f"{BASE}/runs/{run_id}/replay/", {"step": agent, "live": True}, "json"),
        )
        assert len(upstream.requests) == calls_before_replay + 1

        # The run socket: an ended run replays every frame it streamed.
        async def watch(run_id: str) -> None:
            socket, opened = await _open(
                f"/ws/orgs/alpha/runs/{run_id}/", world.alpha.users["admin"]
            )
            assert opened
            frames, _ = await _to_the_close(socket)
            assert frames, run_id
            bodies.append(("run socket", json.dumps(frames)))

        all_runs = keep("runs list after", admin.get(f"{BASE}/runs/"))["results"]
        for run in all_runs:
            if run["orchestrator"]["slug"] == SLUG:
                _run_async(watch(run["id"]))
        keep("llm configs", admin.get(f"{BASE}/llm-configs/"))
        keep("orchestrator detail after", admin.get(f"{BASE}/orchestrators/{SLUG}/"))

        ran = queued()
        delivered = [name for name, _ in ran if name == "alerts.deliver"]
        assert len(delivered) == (2 if upstream.echo else 0), ran
        assert len(receiver.received) == len(delivered)
        for headers, body, _status in receiver.received:
            bodies.append(("alert webhook", json.dumps(headers) + body.decode()))

        # The secrets were used: the provider saw the key, the tool's upstream the credential.
        authorizations = {r.headers.get("authorization") for r in openai_server.requests}
        assert authorizations == {f"Bearer {LLM_KEY}"}, authorizations
        assert len(openai_server.requests) >= 7
        headers = [r["headers"].get("X-Vault-Credential") for r in upstream.requests]
        assert headers and set(headers) == {PLUGIN_SECRET}, headers
        # ...and are found nowhere else, where the control is found in every kind of place.
        found = [f"{what}: {_leaks(text)}" for what, text in bodies if _leaks(text)]
        found += [
            f"log {record.name}: {_leaks(repr(record.__dict__) + record.getMessage())}"
            for record in caplog.records
            if _leaks(repr(record.__dict__) + record.getMessage())
        ]
        found += _database_leaks()
        found += _file_leaks(plugin_storage)
        found += _redis_leaks()
        found += [
            f"upstream request body {r.path}: {_leaks(json.dumps(r.body))}"
            for r in openai_server.requests
            if _leaks(json.dumps(r.body))
        ]
        leaks = [line for line in found if _secret(line.rsplit(":", 1)[-1])]
        assert not leaks, leaks
        for place in (
            "conversation message",
            "payload",
            "export",
            "bundle",
            "run socket",
            "log httpx",  # the tool's request line, logged during the run...
            "logs",  # ...is one of the run's log lines
            "org_alpha.engine_runlog.",
            "org_alpha.engine_runevent.",
            "file media/runs/org_alpha/",
            "redis ",
        ):
            assert any(line.startswith(place) for line in found), (
                place,
                sorted({line.split(":")[0] for line in found}),
            )
    finally:
        _cleanup()
