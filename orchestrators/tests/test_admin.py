from __future__ import annotations

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from orchestrators.models import LLMConfig, OrchestratorInstance

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def eager():
    from cadence_site.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def test_llm_key_is_write_only_in_the_tenant_admin(world):
    client = _client(world.alpha.users["admin"])

    response = client.post(
        "/orgs/alpha/admin/orchestrators/llmconfig/add/",
        {
            "name": "k",
            "provider": "offline",
            "model": "m",
            "api_key": "sk-admin-secret-123456",
            "timeout_seconds": 60,
            "max_retries": 2,
        },
    )

    assert response.status_code == 302, response.content[:2000]
    with schema_context("org_alpha"):
        config = LLMConfig.objects.get(name="k")
    page = client.get(f"/orgs/alpha/admin/orchestrators/llmconfig/{config.pk}/change/")
    assert page.status_code == 200
    assert b"sk-admin-secret-123456" not in page.content
    assert "sk-…3456".encode() in page.content
    assert b"(demo)" in client.get("/orgs/alpha/admin/orchestrators/llmconfig/").content


def test_invalid_flow_in_the_admin_form_is_shown_on_the_field(world):
    client = _client(world.alpha.users["owner"])
    with schema_context("org_alpha"):
        from orchestrators.services import llm_config_create

        config = llm_config_create(name="adm", provider="offline", model="m")

    response = client.post(
        "/orgs/alpha/admin/orchestrators/orchestratorinstance/add/",
        {
            "slug": "adm",
            "name": "Adm",
            "framework": "cadence",
            "llm_config": config.pk,
            "system_prompt": "x",
            "tools": '["clock"]',
            "max_steps": 8,
            "tier": "warm",
            "flow": '{"name": "f", "steps": [{"then": "nope"}]}',
        },
    )

    assert response.status_code == 200
    assert "nope" in str(response.context["adminform"].form.errors["flow"])


def test_try_it_runs_one_turn_and_shows_the_reply(world, eager, django_capture_on_commit_callbacks):
    client = _client(world.alpha.users["member"])
    with schema_context("org_alpha"):
        from orchestrators.services import llm_config_create, orchestrator_create

        config = llm_config_create(name="try", provider="offline", model="m")
        with django_capture_on_commit_callbacks(execute=True):
            instance = orchestrator_create(slug="try-it", name="Try", llm_config=config)

    response = client.post(
        f"/orgs/alpha/admin/orchestrators/orchestratorinstance/{instance.pk}/try/",
        {"message": "ping"},
        follow=True,
    )

    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    assert any("Reply: Offline model. You said: ping" in m for m in messages)
    from engine.models import Run

    with schema_context("org_alpha"):
        run = Run.objects.filter(orchestrator_slug="try-it", trigger="admin").get()
    assert any(f'href="/orgs/alpha/admin/engine/run/{run.pk}/change/"' in m for m in messages)
    page = response.content.decode()
    assert 'class="mermaid"' in page and "prepare_prompt" in page


def test_members_cannot_change_orchestrators_in_the_admin(world):
    client = _client(world.alpha.users["member"])
    with schema_context("org_alpha"):
        from orchestrators.services import llm_config_create

        config = llm_config_create(name="ro", provider="offline", model="m")

    response = client.post(
        "/orgs/alpha/admin/orchestrators/orchestratorinstance/add/",
        {
            "slug": "ro",
            "name": "Ro",
            "framework": "cadence",
            "llm_config": config.pk,
            "tools": "[]",
            "max_steps": 8,
            "tier": "warm",
            "flow": "{}",
        },
    )

    assert response.status_code == 403
    with schema_context("org_alpha"):
        assert not OrchestratorInstance.objects.filter(slug="ro").exists()


def test_another_organizations_member_cannot_open_the_admin_pages(world):
    response = _client(world.bravo.users["owner"]).get("/orgs/alpha/admin/orchestrators/llmconfig/")

    assert response.status_code == 404


def test_runs_and_conversations_show_in_the_tenant_admin(world):
    owner = _client(world.alpha.users["owner"])
    member = _client(world.alpha.users["member"])

    assert owner.get("/orgs/alpha/admin/engine/run/").status_code == 200
    assert owner.get("/orgs/alpha/admin/chat/conversation/").status_code == 200
    assert member.get("/orgs/alpha/admin/engine/run/").status_code == 200
    assert member.get("/orgs/alpha/admin/chat/conversation/").status_code == 403


def test_the_instance_form_says_which_frameworks_are_missing(world, monkeypatch):
    import orchestrators.adapters as adapters

    client = _client(world.alpha.users["owner"])
    installed = client.get("/orgs/alpha/admin/orchestrators/orchestratorinstance/add/")
    monkeypatch.setattr(adapters, "framework_available", lambda name: name == "cadence")
    missing = client.get("/orgs/alpha/admin/orchestrators/orchestratorinstance/add/")

    assert b"Every framework is installed on this server." in installed.content
    assert b"LangGraph (not installed)" in missing.content
    assert b"Not installed on this server: LangGraph, OpenAI Agents SDK." in missing.content
    assert b"requirements-extras.txt" in missing.content
