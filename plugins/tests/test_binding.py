"""An orchestrator's plugin set through the REST API: settings, secrets, resolution, tools, rebuilds."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django_tenants.utils import schema_context

from orchestrators.models import OrchestratorInstance
from plugins.tests.conftest import manifest, package, simple

pytestmark = pytest.mark.django_db

BASE = "/api/v1/orgs/alpha"


@pytest.fixture
def eager():
    from cadence_site.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def admin(world, as_key):
    return as_key(world.alpha.keys["admin"])


def upload(client, raw: bytes):
    response = client.post(
        f"{BASE}/plugins/", {"package": SimpleUploadedFile("p.zip", raw)}, format="multipart"
    )
    assert response.status_code in (200, 201), response.json()
    return response.json()


@pytest.fixture
def llm(admin) -> str:
    response = admin.post(
        f"{BASE}/llm-configs/",
        {"name": "offline", "provider": "offline", "model": "cadence-offline"},
        format="json",
    )
    return response.json()["id"]


def create(client, llm, captured, plugins, slug="helper"):
    with captured(execute=True):
        return client.post(
            f"{BASE}/orchestrators/",
            {"slug": slug, "name": "Helper", "llm_config": llm, "plugins": plugins},
            format="json",
        )


def weather_on(server, version="1.0.0", **changes) -> bytes:
    data = manifest(version=version, capabilities={"egress": ["127.0.0.1"], "secrets": ["api_key"]})
    data["provides"]["tools"][0]["url"] = server.base_url + "/v1/forecast/{city}"
    data.update(changes)
    return package(data)


def test_plugin_tools_are_called_with_secret_headers_and_recorded(
    world, admin, as_key, llm, http_server, eager, django_capture_on_commit_callbacks
):
    upload(admin, weather_on(http_server))
    response = create(
        admin,
        llm,
        django_capture_on_commit_callbacks,
        [
            {
                "id": "com.acme.weather",
                "version": ">=1,<2",
                "settings": {"api_key": "sk-weather-123456", "units": "metric"},
            }
        ],
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["plugins"] == [
        {
            "id": "com.acme.weather",
            "version": ">=1,<2",
            "settings": {"units": "metric"},
            "secrets_set": ["api_key"],
        }
    ]
    assert body["plugin_lock"]["com.acme.weather"]["version"] == "1.0.0"
    assert "sk-weather" not in json.dumps(admin.get(f"{BASE}/orchestrators/{body['id']}/").json())
    with schema_context("org_alpha"):
        stored = OrchestratorInstance.objects.get(pk=body["id"])
        assert stored.status == "ready", stored.status_message
    assert "sk-weather" not in json.dumps(stored.plugins)

    member = as_key(world.alpha.keys["member"])
    reply = member.post(
        f"{BASE}/orchestrators/{body['id']}/invoke/",
        {"messages": [{"role": "user", "content": '/tool forecast {"city": "São Paulo/x"}'}]},
        format="json",
    )
    assert reply.status_code == 200, reply.json()
    assert reply.json()["tool_calls"][0]["name"] == "forecast"
    [request] = http_server.requests
    assert request["path"] == "/v1/forecast/S%C3%A3o%20Paulo%2Fx"
    assert request["headers"]["Authorization"] == "Bearer sk-weather-123456"


def test_settings_that_fail_the_schema_are_refused_without_echoing_secrets(
    admin, llm, django_capture_on_commit_callbacks
):
    upload(admin, package())
    response = create(
        admin,
        llm,
        django_capture_on_commit_callbacks,
        [{"id": "com.acme.weather", "settings": {"api_key": "abc", "units": "kelvin"}}],
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_settings"
    assert [i["path"] for i in error["details"]["issues"]] == [
        "/plugins/0/settings/api_key",
        "/plugins/0/settings/units",
    ]
    assert "abc" not in json.dumps(error)
    with schema_context("org_alpha"):
        assert OrchestratorInstance.objects.count() == 0


def test_a_secret_is_kept_when_omitted_and_replaced_when_given(
    admin, llm, django_capture_on_commit_callbacks
):
    upload(admin, package())
    created = create(
        admin,
        llm,
        django_capture_on_commit_callbacks,
        [{"id": "com.acme.weather", "settings": {"api_key": "first-secret"}}],
    ).json()
    with schema_context("org_alpha"):
        before = OrchestratorInstance.objects.get(pk=created["id"])
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.patch(
            f"{BASE}/orchestrators/{created['id']}/",
            {"plugins": [{"id": "com.acme.weather", "settings": {"units": "imperial"}}]},
            format="json",
        )
    assert response.status_code == 200, response.json()
    assert response.json()["plugins"][0]["secrets_set"] == ["api_key"]
    assert response.json()["config_hash"] != created["config_hash"]
    with schema_context("org_alpha"):
        after = OrchestratorInstance.objects.get(pk=created["id"])
    assert after.plugins[0]["secrets"] == before.plugins[0]["secrets"]


@pytest.mark.parametrize(
    "packages,plugins,code,chains",
    [
        (
            [],
            [{"id": "com.acme.nothing"}],
            "missing_dependency",
            [["orchestrator", "com.acme.nothing *"]],
        ),
        (
            [simple("com.acme.app", deps={"com.acme.lib": ">=2"}), simple("com.acme.lib", "1.0.0")],
            [{"id": "com.acme.app"}],
            "no_matching_version",
            [["orchestrator", "com.acme.app 1.0.0", "com.acme.lib >=2"]],
        ),
        (
            [
                simple("com.acme.app", deps={"com.acme.lib": ">=2"}),
                simple("com.acme.lib", "1.0.0"),
                simple("com.acme.lib", "2.0.0"),
            ],
            [{"id": "com.acme.app"}, {"id": "com.acme.lib", "version": "<2"}],
            "version_conflict",
            [
                ["orchestrator", "com.acme.app 1.0.0", "com.acme.lib >=2"],
                ["orchestrator", "com.acme.lib <2"],
            ],
        ),
        (
            [
                simple("com.acme.a", deps={"com.acme.b": "*"}),
                simple("com.acme.b", deps={"com.acme.a": "*"}),
            ],
            [{"id": "com.acme.a"}],
            "dependency_cycle",
            [["com.acme.a 1.0.0", "com.acme.b 1.0.0", "com.acme.a 1.0.0"]],
        ),
        (
            [],
            [{"id": "com.acme.x", "version": "latest"}],
            "bad_range",
            [["orchestrator", "com.acme.x latest"]],
        ),
    ],
)
def test_resolution_failures_are_400s_with_their_chain(
    admin, llm, django_capture_on_commit_callbacks, packages, plugins, code, chains
):
    for raw in packages:
        upload(admin, raw)
    response = create(admin, llm, django_capture_on_commit_callbacks, plugins)

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == code
    assert sorted(error["details"]["issues"][0]["chains"]) == sorted(chains)
    with schema_context("org_alpha"):
        assert OrchestratorInstance.objects.count() == 0


def test_another_organizations_plugin_cannot_be_named(
    world, as_key, admin, llm, django_capture_on_commit_callbacks
):
    bravo = as_key(world.bravo.keys["owner"])
    response = bravo.post(
        "/api/v1/orgs/bravo/plugins/",
        {"package": SimpleUploadedFile("p.zip", package())},
        format="multipart",
    )
    assert response.status_code == 201
    admin = as_key(world.alpha.keys["admin"])
    response = create(admin, llm, django_capture_on_commit_callbacks, [{"id": "com.acme.weather"}])
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "missing_dependency"


def test_colliding_tool_names_are_namespaced(
    admin, llm, http_server, eager, django_capture_on_commit_callbacks
):
    upload(admin, weather_on(http_server))
    other = manifest(
        id="com.other.meteo", capabilities={"egress": ["127.0.0.1"], "secrets": ["api_key"]}
    )
    other["provides"]["tools"][0]["url"] = http_server.base_url + "/meteo/{city}"
    upload(admin, package(other))
    settings = {"api_key": "k-123456"}
    response = create(
        admin,
        llm,
        django_capture_on_commit_callbacks,
        [
            {"id": "com.acme.weather", "settings": settings},
            {"id": "com.other.meteo", "settings": settings},
        ],
    )
    assert response.status_code == 201, response.json()
    from orchestrators.services import runtime_config

    with schema_context("org_alpha"):
        instance = OrchestratorInstance.objects.select_related("llm_config").get(
            pk=response.json()["id"]
        )
        names = [tool.name for tool in runtime_config(instance, org_slug="alpha").tools]
    assert names == ["weather__forecast", "meteo__forecast"]


def test_a_new_version_rebuilds_the_orchestrators_that_use_it(
    admin, llm, http_server, eager, django_capture_on_commit_callbacks
):
    upload(admin, weather_on(http_server))
    created = create(
        admin,
        llm,
        django_capture_on_commit_callbacks,
        [{"id": "com.acme.weather", "version": "<2", "settings": {"api_key": "k-123456"}}],
    ).json()
    with django_capture_on_commit_callbacks(execute=True):
        upload(admin, weather_on(http_server, version="1.1.0"))
    detail = admin.get(f"{BASE}/orchestrators/{created['id']}/").json()
    assert detail["plugin_lock"]["com.acme.weather"]["version"] == "1.1.0"
    assert detail["config_hash"] != created["config_hash"]
    assert detail["status"] == "ready"
    # Withdrawing the version re-resolves to the previous one.
    with django_capture_on_commit_callbacks(execute=True):
        admin.post(f"{BASE}/plugins/com.acme.weather/versions/1.1.0/disable/")
    detail = admin.get(f"{BASE}/orchestrators/{created['id']}/").json()
    assert detail["plugin_lock"]["com.acme.weather"]["version"] == "1.0.0"
    assert detail["status"] == "ready"
    # Disabling the last usable version fails the orchestrator with the reason.
    with django_capture_on_commit_callbacks(execute=True):
        admin.post(f"{BASE}/plugins/com.acme.weather/versions/1.0.0/disable/")
    detail = admin.get(f"{BASE}/orchestrators/{created['id']}/").json()
    assert detail["status"] == "failed"
    assert "com.acme.weather" in detail["status_message"]


def test_members_cannot_configure_plugin_sets(
    world, as_key, admin, llm, django_capture_on_commit_callbacks
):
    upload(admin, package())
    member = as_key(world.alpha.keys["member"])
    response = create(member, llm, django_capture_on_commit_callbacks, [{"id": "com.acme.weather"}])
    assert response.status_code == 403
    with schema_context("org_alpha"):
        assert OrchestratorInstance.objects.count() == 0


CODE_TOOL = b"""
page = call_tool('forecast', {'city': args['city']})
{'city': args['city'], 'units': settings.get('units', 'metric'), 'upstream': page['json']['path'],
 'has_secret': 'api_key' in settings}
"""


def test_a_code_tool_runs_sandboxed_and_reaches_only_its_http_tools(
    world, admin, as_key, llm, http_server, eager, django_capture_on_commit_callbacks
):
    data = manifest(capabilities={"egress": ["127.0.0.1"], "secrets": ["api_key"]})
    data["provides"]["tools"][0]["url"] = http_server.base_url + "/v1/forecast/{city}"
    data["provides"]["tools"].append(
        {
            "name": "summary",
            "type": "code",
            "description": "A summary computed in the sandbox.",
            "source": "code/summary.py",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    )
    upload(admin, package(data, {"code/summary.py": CODE_TOOL}))
    created = create(
        admin,
        llm,
        django_capture_on_commit_callbacks,
        [{"id": "com.acme.weather", "settings": {"api_key": "k-123456", "units": "imperial"}}],
    ).json()
    member = as_key(world.alpha.keys["member"])
    reply = member.post(
        f"{BASE}/orchestrators/{created['id']}/invoke/",
        {"messages": [{"role": "user", "content": '/tool summary {"city": "Oslo"}'}]},
        format="json",
    )
    assert reply.status_code == 200, reply.json()
    [call] = reply.json()["tool_calls"]
    assert call["name"] == "summary"
    assert call["result"] == {
        "city": "Oslo",
        "units": "imperial",
        "upstream": "/v1/forecast/Oslo",
        "has_secret": False,
    }
    assert http_server.requests[0]["headers"]["Authorization"] == "Bearer k-123456"


PYTHON_TOOL = b"""
def shout(args, settings):
    return {"text": args["text"].upper() + settings.get("suffix", "!")}
"""


def test_a_system_plugin_python_tool_serves_every_organization(
    world, as_key, llm, eager, django_capture_on_commit_callbacks
):
    from plugins.services import plugin_upload

    data = {
        "schema_version": 1,
        "id": "io.cadence.text",
        "name": "Text",
        "version": "1.0.0",
        "kind": "system",
        "provides": {
            "tools": [
                {
                    "name": "shout",
                    "type": "python",
                    "description": "Upper-case a text.",
                    "entrypoint": "text:shout",
                    "parameters": {
                        "type": "object",
                        "properties": {"text": {"type": "string"}},
                        "required": ["text"],
                    },
                }
            ]
        },
        "settings": {"type": "object", "properties": {"suffix": {"type": "string"}}},
    }
    with schema_context("public"):
        plugin_upload(raw=package(data, {"python/text.py": PYTHON_TOOL}), uploaded_by="ops")
    admin = as_key(world.alpha.keys["admin"])
    created = create(
        admin,
        llm,
        django_capture_on_commit_callbacks,
        [{"id": "io.cadence.text", "settings": {"suffix": "?"}}],
    ).json()
    assert created["plugin_lock"]["io.cadence.text"]["source"] == "system"
    reply = admin.post(
        f"{BASE}/orchestrators/{created['id']}/invoke/",
        {"messages": [{"role": "user", "content": '/tool shout {"text": "hi"}'}]},
        format="json",
    )
    assert reply.json()["tool_calls"][0]["result"] == {"text": "HI?"}


def test_a_tenant_upload_of_a_system_kind_plugin_is_refused(admin):
    response = admin.post(
        f"{BASE}/plugins/",
        {"package": SimpleUploadedFile("p.zip", package(manifest(kind="system")))},
        format="multipart",
    )
    assert response.status_code == 400
    assert ("/kind", "wrong_kind") in [
        (i["path"], i["code"]) for i in response.json()["error"]["details"]["issues"]
    ]


SIGN_NOTE = b"""
text = read('final')
write('final', text + ' -- ' + settings['signature'])
"""
LOOP_NOTE = b"""
while True:
    pass
"""
SNEAKY_NOTE = b"""
write('messages', [])
"""


def signing_plugin(note_source: bytes = SIGN_NOTE) -> bytes:
    data = {
        "schema_version": 1,
        "id": "com.acme.sign",
        "name": "Signature",
        "version": "1.0.0",
        "kind": "tenant",
        "provides": {
            "notes": [
                {"name": "sign", "source": "code/sign.py", "reads": ["final"], "writes": ["final"]}
            ],
            "flows": [
                {
                    "name": "signed",
                    "flow": {
                        "name": "signed",
                        "steps": [
                            {"then": "prepare_prompt"},
                            {"then": "agent"},
                            {"then": "sign.sign"},
                            {"then": "finalize"},
                        ],
                    },
                }
            ],
            "prompts": [{"name": "tone", "template": "Answer like a pirate."}],
        },
        "settings": {
            "type": "object",
            "properties": {"signature": {"type": "string"}},
            "required": ["signature"],
        },
    }
    return package(data, {"code/sign.py": note_source})


def test_a_plugin_flow_with_a_code_note_and_a_prompt(
    admin, llm, eager, django_capture_on_commit_callbacks
):
    upload(admin, signing_plugin())
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(
            f"{BASE}/orchestrators/",
            {
                "slug": "signed",
                "name": "Signed",
                "llm_config": llm,
                "flow": {"use": "com.acme.sign/signed"},
                "system_prompt": "{{plugin:com.acme.sign/tone}} Be kind.",
                "plugins": [{"id": "com.acme.sign", "settings": {"signature": "Cadence"}}],
            },
            format="json",
        )
    assert response.status_code == 201, response.json()
    created = response.json()
    detail = admin.get(f"{BASE}/orchestrators/{created['id']}/").json()
    assert detail["status"] == "ready", detail["status_message"]
    from orchestrators.services import runtime_config

    with schema_context("org_alpha"):
        instance = OrchestratorInstance.objects.select_related("llm_config").get(pk=created["id"])
        config = runtime_config(instance, org_slug="alpha")
    assert config.system_prompt == "Answer like a pirate. Be kind."
    assert [s["then"] for s in config.flow["steps"]][2] == "sign.sign"
    reply = admin.post(
        f"{BASE}/orchestrators/{created['id']}/invoke/",
        {"messages": [{"role": "user", "content": "hello"}]},
        format="json",
    )
    assert reply.status_code == 200, reply.json()
    assert reply.json()["message"]["content"] == "Offline model. You said: hello -- Cadence"


@pytest.mark.parametrize(
    "source,reason", [(LOOP_NOTE, "time limit"), (SNEAKY_NOTE, "may not write 'messages'")]
)
def test_a_code_note_that_breaks_a_rule_fails_its_step(
    admin, llm, eager, django_capture_on_commit_callbacks, source, reason
):
    upload(admin, signing_plugin(source))
    with django_capture_on_commit_callbacks(execute=True):
        created = admin.post(
            f"{BASE}/orchestrators/",
            {
                "slug": "signed",
                "name": "Signed",
                "llm_config": llm,
                "flow": {"use": "com.acme.sign/signed"},
                "plugins": [{"id": "com.acme.sign", "settings": {"signature": "x"}}],
            },
            format="json",
        ).json()
    reply = admin.post(
        f"{BASE}/orchestrators/{created['id']}/invoke/",
        {"messages": [{"role": "user", "content": "hello"}]},
        format="json",
    )
    assert reply.status_code >= 400 and reply.status_code < 600
    assert reason in json.dumps(reply.json())
    # The sandbox still serves the next call.
    from asgiref.sync import async_to_sync

    from plugins.sandbox import run_code

    assert async_to_sync(run_code)("2 * 21", inputs={})["result"] == 42


def test_a_flow_from_a_plugin_outside_the_set_is_refused(
    admin, llm, django_capture_on_commit_callbacks
):
    upload(admin, signing_plugin())
    response = admin.post(
        f"{BASE}/orchestrators/",
        {"slug": "x", "name": "X", "llm_config": llm, "flow": {"use": "com.acme.sign/signed"}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_plugin_flow"


def test_a_new_system_plugin_version_rebuilds_users_in_every_organization(
    world, as_key, llm, eager, django_capture_on_commit_callbacks
):
    from plugins.services import plugin_upload

    def system(version):
        return simple("io.cadence.base", version, kind="system")

    with schema_context("public"):
        plugin_upload(raw=system("1.0.0"), uploaded_by="ops")
    admin = as_key(world.alpha.keys["admin"])
    created = create(
        admin, llm, django_capture_on_commit_callbacks, [{"id": "io.cadence.base", "version": "<2"}]
    ).json()
    assert created["plugin_lock"]["io.cadence.base"]["version"] == "1.0.0"
    with django_capture_on_commit_callbacks(execute=True), schema_context("public"):
        plugin_upload(raw=system("1.1.0"), uploaded_by="ops")
    detail = admin.get(f"{BASE}/orchestrators/{created['id']}/").json()
    assert detail["plugin_lock"]["io.cadence.base"] == {
        "version": "1.1.0",
        "source": "system",
        "sha256": detail["plugin_lock"]["io.cadence.base"]["sha256"],
    }
    assert detail["status"] == "ready" and detail["config_hash"] != created["config_hash"]
