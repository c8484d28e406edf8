from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from orchestrators.models import LLMConfig, OrchestratorInstance

pytestmark = pytest.mark.django_db

BASE = "/api/v1/orgs/alpha"


@pytest.fixture
def eager(settings):
    """Builds run inline when their transaction commits (the worker itself is tested elsewhere)."""
    from cadence_site.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def admin(world, as_key):
    return as_key(world.alpha.keys["admin"])


def _offline_config(client, name="offline") -> str:
    response = client.post(
        f"{BASE}/llm-configs/",
        {"name": name, "provider": "offline", "model": "cadence-offline"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def _create(client, django_capture_on_commit_callbacks, **body) -> dict:
    payload = {"slug": "helper", "name": "Helper"} | body
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{BASE}/orchestrators/", payload, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


# --- LLM configurations -----------------------------------------------------------------------


def test_llm_key_is_write_only_and_masked(admin, openai_server):
    response = admin.post(
        f"{BASE}/llm-configs/",
        {
            "name": "gpt",
            "provider": "openai_compatible",
            "base_url": openai_server.base_url,
            "model": "gpt-test",
            "api_key": "sk-test-1234567890abcdef9f2c",
        },
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["api_key"] == "sk-…9f2c" and body["has_api_key"] is True
    assert "1234567890" not in response.content.decode()
    with schema_context("org_alpha"):
        stored = LLMConfig.objects.get(pk=body["id"])
    assert "sk-test" not in stored.api_key_encrypted
    listed = admin.get(f"{BASE}/llm-configs/").content.decode()
    assert "1234567890" not in listed


def test_llm_base_url_on_a_private_address_is_refused(admin):
    for url in ("http://127.0.0.1:9/v1", "http://10.0.0.5/v1", "http://169.254.169.254/latest"):
        response = admin.post(
            f"{BASE}/llm-configs/",
            {"name": "x", "provider": "openai_compatible", "base_url": url, "model": "m"},
            format="json",
        )
        assert response.status_code == 400, url
        assert response.json()["error"]["code"] == "egress_denied"
        assert response.json()["error"]["details"]["field"] == "base_url"


def test_llm_configs_are_per_organization(world, admin, as_key):
    config_id = _offline_config(admin)

    other = as_key(world.bravo.keys["owner"])
    assert other.get(f"/api/v1/orgs/bravo/llm-configs/{config_id}/").status_code == 404
    assert other.get(f"{BASE}/llm-configs/{config_id}/").status_code == 404
    assert other.get("/api/v1/orgs/bravo/llm-configs/").json()["results"] == []


def test_llm_config_writes_need_admin(world, as_key):
    member = as_key(world.alpha.keys["member"])

    response = member.post(
        f"{BASE}/llm-configs/", {"name": "m", "provider": "offline", "model": "x"}, format="json"
    )

    assert (response.status_code, response.json()["error"]["code"]) == (403, "role_required")
    with schema_context("org_alpha"):
        assert LLMConfig.objects.count() == 0


# --- orchestrators ----------------------------------------------------------------------------


def test_create_builds_to_ready_and_invoke_answers(
    world, admin, as_key, eager, django_capture_on_commit_callbacks
):
    config_id = _offline_config(admin)

    created = _create(
        admin, django_capture_on_commit_callbacks, llm_config=config_id, tools=["calculator"]
    )
    assert created["status"] == "building"
    detail = admin.get(f"{BASE}/orchestrators/{created['id']}/").json()
    assert (detail["status"], detail["status_message"]) == ("ready", "")

    member = as_key(world.alpha.keys["member"])
    reply = member.post(
        f"{BASE}/orchestrators/{created['id']}/invoke/",
        {"messages": [{"role": "user", "content": "hello there"}]},
        format="json",
    )
    assert reply.status_code == 200, reply.json()
    assert reply.json()["message"] == {
        "role": "assistant",
        "content": "Offline model. You said: hello there",
    }
    assert reply.json()["orchestrator"]["config_hash"] == detail["config_hash"]

    tool = member.post(
        f"{BASE}/orchestrators/{created['id']}/invoke/",
        {"messages": [{"role": "user", "content": '/tool calculator {"expression": "6*7"}'}]},
        format="json",
    )
    assert tool.json()["tool_calls"][0]["name"] == "calculator"
    assert "42" in tool.json()["message"]["content"]


def test_invalid_flow_is_a_400_naming_the_place(admin, django_capture_on_commit_callbacks):
    config_id = _offline_config(admin)
    flow = {"name": "bad", "steps": [{"then": "prepare_prompt"}, {"then": "no_such_note"}]}

    response = admin.post(
        f"{BASE}/orchestrators/",
        {"slug": "bad", "name": "Bad", "llm_config": config_id, "flow": flow},
        format="json",
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_flow" and error["details"]["field"] == "flow"
    assert "no_such_note" in error["message"]
    assert error["details"]["issues"][0]["path"] == "/steps/1/then"
    with schema_context("org_alpha"):
        assert not OrchestratorInstance.objects.filter(slug="bad").exists()


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"tools": ["no_such_tool"]}, "unknown_tool", "tools"),
        ({"llm_config": None}, "llm_config_required", "llm_config"),
        ({"framework": "crewai"}, "invalid", "framework"),
        ({"max_steps": 0}, "invalid", "max_steps"),
        ({"slug": "Bad Slug"}, "invalid", "slug"),
    ],
)
def test_bad_orchestrator_input_is_a_clear_400(admin, body, code, field):
    config_id = _offline_config(admin)
    payload = {"slug": "ok", "name": "Ok", "llm_config": config_id} | body

    response = admin.post(f"{BASE}/orchestrators/", payload, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert field in (error["details"].get("field"), *error["details"].keys())


def test_a_framework_that_is_not_installed_is_refused(admin, monkeypatch):
    import orchestrators.adapters as adapters

    config_id = _offline_config(admin)
    monkeypatch.setattr(adapters, "framework_available", lambda name: name == "cadence")

    response = admin.post(
        f"{BASE}/orchestrators/",
        {"slug": "lg", "name": "LG", "llm_config": config_id, "framework": "langgraph"},
        format="json",
    )

    assert (response.status_code, response.json()["error"]["code"]) == (
        400,
        "framework_not_installed",
    )


def test_an_llm_config_of_another_org_cannot_be_used(world, admin, as_key):
    from orchestrators.services import llm_config_create

    with schema_context("org_bravo"):
        bravo_config = llm_config_create(name="bravo-only", provider="offline", model="x")

    response = admin.post(
        f"{BASE}/orchestrators/",
        {"slug": "x", "name": "X", "llm_config": str(bravo_config.id)},
        format="json",
    )

    assert (response.status_code, response.json()["error"]["code"]) == (400, "unknown_llm_config")


def test_suspend_then_invoke_is_refused_then_activate_restores(
    world, admin, eager, django_capture_on_commit_callbacks
):
    config_id = _offline_config(admin)
    created = _create(admin, django_capture_on_commit_callbacks, llm_config=config_id)
    url = f"{BASE}/orchestrators/{created['id']}"

    with django_capture_on_commit_callbacks(execute=True):
        assert admin.post(f"{url}/suspend/").json()["status"] == "suspended"
    refused = admin.post(
        f"{url}/invoke/", {"messages": [{"role": "user", "content": "hi"}]}, format="json"
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "orchestrator_suspended")

    with django_capture_on_commit_callbacks(execute=True):
        admin.post(f"{url}/activate/")
    assert admin.get(f"{url}/").json()["status"] == "ready"
    assert (
        admin.post(
            f"{url}/invoke/", {"messages": [{"role": "user", "content": "hi"}]}, format="json"
        ).status_code
        == 200
    )


def test_update_bumps_version_and_the_new_config_serves(
    admin, eager, django_capture_on_commit_callbacks
):
    config_id = _offline_config(admin)
    created = _create(admin, django_capture_on_commit_callbacks, llm_config=config_id)
    url = f"{BASE}/orchestrators/{created['id']}"
    first = admin.post(
        f"{url}/invoke/", {"messages": [{"role": "user", "content": "hi"}]}, format="json"
    ).json()

    with django_capture_on_commit_callbacks(execute=True):
        updated = admin.patch(f"{url}/", {"system_prompt": "Be terse."}, format="json").json()
    second = admin.post(
        f"{url}/invoke/", {"messages": [{"role": "user", "content": "hi"}]}, format="json"
    ).json()

    assert updated["version"] == created["version"] + 1
    assert (
        second["orchestrator"]["config_hash"]
        == updated["config_hash"]
        != first["orchestrator"]["config_hash"]
    )


def test_diagram_is_mermaid(admin, eager, django_capture_on_commit_callbacks, world, as_key):
    config_id = _offline_config(admin)
    created = _create(admin, django_capture_on_commit_callbacks, llm_config=config_id)

    response = as_key(world.alpha.keys["viewer"]).get(
        f"{BASE}/orchestrators/{created['id']}/diagram/"
    )

    assert response.status_code == 200
    assert response.json()["format"] == "mermaid"
    assert "prepare_prompt" in response.json()["diagram"] and "agent" in response.json()["diagram"]


def test_openai_compatible_orchestrator_against_a_real_server(
    admin, openai_server, eager, django_capture_on_commit_callbacks
):
    config = admin.post(
        f"{BASE}/llm-configs/",
        {
            "name": "fake",
            "provider": "openai_compatible",
            "base_url": openai_server.base_url,
            "model": "gpt-fake",
            "api_key": "sk-fake-key-000111222",
        },
        format="json",
    ).json()
    created = _create(
        admin,
        django_capture_on_commit_callbacks,
        llm_config=config["id"],
        system_prompt="You are terse.",
    )
    assert admin.get(f"{BASE}/orchestrators/{created['id']}/").json()["status"] == "ready"
    openai_server.reply("Hello from the server")

    reply = admin.post(
        f"{BASE}/orchestrators/{created['id']}/invoke/",
        {"messages": [{"role": "user", "content": "hi"}]},
        format="json",
    )

    assert reply.status_code == 200, reply.json()
    assert reply.json()["message"]["content"] == "Hello from the server"
    sent = openai_server.last_request
    assert sent.headers.get("authorization") == "Bearer sk-fake-key-000111222"
    assert sent.body["messages"][0] == {"role": "system", "content": "You are terse."}


def test_unreachable_base_url_fails_the_build_with_its_reason(
    admin, settings, eager, django_capture_on_commit_callbacks
):
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = ["127.0.0.1"]
    config = admin.post(
        f"{BASE}/llm-configs/",
        {
            "name": "dead",
            "provider": "openai_compatible",
            "base_url": "http://127.0.0.1:9/v1",
            "model": "m",
            "api_key": "sk-x",
        },
        format="json",
    ).json()

    created = _create(admin, django_capture_on_commit_callbacks, llm_config=config["id"])

    detail = admin.get(f"{BASE}/orchestrators/{created['id']}/").json()
    assert detail["status"] == "failed"
    assert "unreachable" in detail["status_message"]


# --- outsiders ------------------------------------------------------------------------------


def test_outsiders_cannot_see_or_use_an_orchestrator(
    world, admin, api, eager, django_capture_on_commit_callbacks
):
    config_id = _offline_config(admin)
    created = _create(admin, django_capture_on_commit_callbacks, llm_config=config_id)
    url = f"{BASE}/orchestrators/{created['id']}"
    invoke = {"messages": [{"role": "user", "content": "hi"}]}

    api.credentials(HTTP_AUTHORIZATION=f"Bearer {world.bravo.keys['owner']}")
    assert api.get(f"{url}/").status_code == 404
    assert api.post(f"{url}/invoke/", invoke, format="json").status_code == 404
    assert api.get(f"/api/v1/orgs/bravo/orchestrators/{created['id']}/").status_code == 404
    assert (
        api.post(
            f"/api/v1/orgs/bravo/orchestrators/{created['id']}/invoke/", invoke, format="json"
        ).status_code
        == 404
    )

    api.credentials()
    api.force_login(world.outsider)
    assert api.post(f"{url}/invoke/", invoke, format="json").status_code == 404

    api.force_login(world.alpha.users["viewer"])
    assert api.post(f"{url}/invoke/", invoke, format="json").status_code == 403
    assert api.patch(f"{url}/", {"name": "hacked"}, format="json").status_code == 403
    assert api.post(f"{url}/suspend/").status_code == 403

    api.force_login(world.alpha.users["member"])
    assert api.delete(f"{url}/").status_code == 403
    with schema_context("org_alpha"):
        instance = OrchestratorInstance.objects.get(pk=created["id"])
    assert (instance.name, instance.status) == ("Helper", "ready")


def test_invoke_input_limits(admin, eager, django_capture_on_commit_callbacks):
    config_id = _offline_config(admin)
    created = _create(admin, django_capture_on_commit_callbacks, llm_config=config_id)
    url = f"{BASE}/orchestrators/{created['id']}/invoke/"

    empty = admin.post(url, {"messages": []}, format="json")
    not_user = admin.post(url, {"messages": [{"role": "assistant", "content": "x"}]}, format="json")
    bad_role = admin.post(url, {"messages": [{"role": "tool", "content": "x"}]}, format="json")
    too_long = admin.post(
        url, {"messages": [{"role": "user", "content": "x" * 40_000}]}, format="json"
    )

    assert [r.status_code for r in (empty, not_user, bad_role, too_long)] == [400, 400, 400, 400]
    assert not_user.json()["error"]["code"] == "invalid_messages"


def test_frameworks_other_than_cadence_need_an_openai_compatible_config(admin):
    config_id = _offline_config(admin)

    response = admin.post(
        f"{BASE}/orchestrators/",
        {"slug": "lg", "name": "LG", "llm_config": config_id, "framework": "langgraph"},
        format="json",
    )

    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["details"]["field"]) == (
        "provider_not_supported",
        "llm_config",
    )


@pytest.mark.parametrize("framework", ["langgraph", "openai_agents"])
def test_optional_frameworks_build_and_answer_through_the_api(
    framework, admin, openai_server, eager, django_capture_on_commit_callbacks
):
    config = admin.post(
        f"{BASE}/llm-configs/",
        {
            "name": f"fake-{framework}",
            "provider": "openai_compatible",
            "base_url": openai_server.base_url,
            "model": "gpt-fake",
            "api_key": "sk-fake-key-000111222",
        },
        format="json",
    ).json()
    created = _create(
        admin,
        django_capture_on_commit_callbacks,
        slug=framework.replace("_", "-"),
        framework=framework,
        llm_config=config["id"],
    )
    assert admin.get(f"{BASE}/orchestrators/{created['id']}/").json()["status"] == "ready"
    openai_server.reply(f"Hello from {framework}")

    reply = admin.post(
        f"{BASE}/orchestrators/{created['id']}/invoke/",
        {"messages": [{"role": "user", "content": "hi"}]},
        format="json",
    )

    assert reply.status_code == 200, reply.json()
    assert reply.json()["message"]["content"] == f"Hello from {framework}"


def test_a_key_the_provider_rejects_fails_the_build_with_its_reason(
    admin, openai_server, eager, django_capture_on_commit_callbacks
):
    openai_server.required_key = "sk-the-right-one"
    config = admin.post(
        f"{BASE}/llm-configs/",
        {
            "name": "wrong",
            "provider": "openai_compatible",
            "base_url": openai_server.base_url,
            "model": "m",
            "api_key": "sk-the-wrong-one-123",
        },
        format="json",
    ).json()

    created = _create(admin, django_capture_on_commit_callbacks, llm_config=config["id"])

    detail = admin.get(f"{BASE}/orchestrators/{created['id']}/").json()
    assert (detail["status"], detail["status_message"]) == (
        "failed",
        "The provider rejected the API key.",
    )
    assert "wrong-one" not in detail["status_message"]

    with django_capture_on_commit_callbacks(execute=True):
        admin.patch(
            f"{BASE}/llm-configs/{config['id']}/", {"api_key": "sk-the-right-one"}, format="json"
        )
    assert admin.get(f"{BASE}/orchestrators/{created['id']}/").json()["status"] == "ready"


# --- local models and offline saves -------------------------------------------------------------


def test_a_base_url_that_does_not_resolve_is_saved_with_a_warning(admin, monkeypatch):
    import socket

    def no_dns(*args, **kwargs):
        raise socket.gaierror("offline")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)

    response = admin.post(
        f"{BASE}/llm-configs/",
        {
            "name": "later",
            "provider": "openai_compatible",
            "base_url": "https://models.example.com/v1",
            "model": "m",
        },
        format="json",
    )

    assert response.status_code == 201, response.json()
    assert response.json()["warnings"] == [
        "The host models.example.com does not resolve. It was saved anyway and is checked again "
        "at every call."
    ]
    assert admin.get(f"{BASE}/llm-configs/{response.json()['id']}/").json()["warnings"] == []


async def test_an_unresolvable_base_url_is_checked_again_at_call_time(settings, monkeypatch):
    import socket

    from orchestrators.llm import provider_for
    from orchestrators.runtime import LLMError, LLMSettings

    settings.CADENCE_EGRESS_ALLOWED_HOSTS = []

    async def no_dns(self, *args, **kwargs):
        raise socket.gaierror("offline")

    import asyncio

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", no_dns)
    llm = LLMSettings(
        provider="openai_compatible", model="m", base_url="https://models.example.com/v1"
    )

    with pytest.raises(LLMError) as info:
        async for _ in provider_for(llm).stream([{"role": "user", "content": "hi"}]):
            pass

    assert (info.value.code, info.value.status) == ("egress_denied", 400)
    assert "does not resolve" in str(info.value)


def test_a_loopback_model_server_is_usable_when_its_network_is_allowed(
    admin, settings, _openai_server_process
):
    # Given what `make run` sets, and no host entry for the local server
    settings.CADENCE_EGRESS_ALLOW_PRIVATE = False
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = []
    settings.CADENCE_EGRESS_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
    body = {
        "provider": "openai_compatible",
        "base_url": _openai_server_process.base_url,
        "model": "llama3",
    }

    saved = admin.post(f"{BASE}/llm-configs/", {"name": "ollama", **body}, format="json")
    settings.CADENCE_EGRESS_ALLOWED_NETWORKS = []
    refused = admin.post(f"{BASE}/llm-configs/", {"name": "ollama2", **body}, format="json")

    assert (saved.status_code, saved.json()["warnings"]) == (201, [])
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "egress_denied"
    assert "CADENCE_EGRESS_ALLOWED_NETWORKS" in error["message"]
    assert error["details"]["field"] == "base_url"


# --- frameworks ---------------------------------------------------------------------------------


def test_frameworks_say_which_are_installed_and_how_to_add_the_rest(world, as_key, monkeypatch):
    import orchestrators.adapters as adapters

    viewer = as_key(world.alpha.keys["viewer"])
    everything = viewer.get(f"{BASE}/frameworks/").json()["results"]
    monkeypatch.setattr(adapters, "framework_available", lambda name: name == "cadence")
    native_only = viewer.get(f"{BASE}/frameworks/").json()["results"]

    assert [(f["name"], f["available"], f["install"]) for f in everything] == [
        ("cadence", True, None),
        ("langgraph", True, None),
        ("openai_agents", True, None),
    ]
    assert [(f["name"], f["available"]) for f in native_only] == [
        ("cadence", True),
        ("langgraph", False),
        ("openai_agents", False),
    ]
    assert "requirements-extras.txt" in native_only[1]["install"]
    assert native_only[2]["label"] == "OpenAI Agents SDK"


def test_frameworks_are_not_shown_to_outsiders(world, as_key, as_user):
    assert as_key(world.bravo.keys["owner"]).get(f"{BASE}/frameworks/").status_code == 404
    assert as_user(world.outsider).get(f"{BASE}/frameworks/").status_code == 404


def test_a_missing_framework_error_says_how_to_install_it(world, admin, monkeypatch):
    import orchestrators.adapters as adapters

    config_id = _offline_config(admin)
    monkeypatch.setattr(adapters, "framework_available", lambda name: name == "cadence")

    response = admin.post(
        f"{BASE}/orchestrators/",
        {"slug": "ag", "name": "AG", "llm_config": config_id, "framework": "openai_agents"},
        format="json",
    )

    assert response.status_code == 400
    assert "pip install -r requirements-extras.txt" in response.json()["error"]["message"]
    with schema_context("org_alpha"):
        assert not OrchestratorInstance.objects.filter(slug="ag").exists()


def test_orchestrator_endpoints_take_the_slug_as_conversations_do(
    admin, eager, django_capture_on_commit_callbacks, world, as_key
):
    config_id = _offline_config(admin)
    created = _create(
        admin, django_capture_on_commit_callbacks, llm_config=config_id, slug="by-slug"
    )

    by_slug = admin.get(f"{BASE}/orchestrators/by-slug/")
    invoked = admin.post(
        f"{BASE}/orchestrators/by-slug/invoke/",
        {"messages": [{"role": "user", "content": "by slug"}]},
        format="json",
    )
    other_org = as_key(world.bravo.keys["owner"]).get(f"{BASE}/orchestrators/by-slug/")
    unknown = admin.get(f"{BASE}/orchestrators/nope/")

    assert (by_slug.status_code, by_slug.json()["id"]) == (200, created["id"])
    assert invoked.status_code == 200, invoked.json()
    assert invoked.json()["message"]["content"] == "Offline model. You said: by slug"
    assert (other_org.status_code, unknown.status_code) == (404, 404)
