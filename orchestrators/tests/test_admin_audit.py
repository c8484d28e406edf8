"""The audit trail of LLM configurations and orchestrators, and the orchestrator page's editor."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from orchestrators.models import LLMConfig, OrchestratorInstance

pytestmark = pytest.mark.django_db

LLM = "/orgs/alpha/admin/orchestrators/llmconfig/"
ORCH = "/orgs/alpha/admin/orchestrators/orchestratorinstance/"


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _events(action: str):
    from tenants.audit.models import AuditEvent

    with schema_context("org_alpha"):
        return list(AuditEvent.objects.filter(action=action).order_by("-created_at"))


def _llm_form(**overrides) -> dict:
    return {
        "name": "audited",
        "provider": "offline",
        "model": "m",
        "timeout_seconds": 60,
        "max_retries": 2,
        **overrides,
    }


def _orch_form(config_pk, **overrides) -> dict:
    return {
        "slug": "aud",
        "name": "Aud",
        "framework": "cadence",
        "llm_config": config_pk,
        "system_prompt": "x",
        "tools": "[]",
        "max_steps": 8,
        "tier": "warm",
        "flow": "",
        **overrides,
    }


def test_llm_config_changes_in_the_admin_are_audited_with_the_key_masked(world):
    client = _client(world.alpha.users["admin"])

    client.post(f"{LLM}add/", _llm_form(api_key="sk-first-secret-1111"))
    with schema_context("org_alpha"):
        config = LLMConfig.objects.get(name="audited")
    client.post(f"{LLM}{config.pk}/change/", _llm_form(model="m2", api_key="sk-second-secret-2222"))

    created, updated = _events("llm_config.created")[0], _events("llm_config.updated")[0]
    assert created.actor == updated.actor == "user:alpha-admin"
    assert created.details["after"]["api_key_hint"] == "sk-…1111"
    assert updated.details["before"]["model"] == "m" and updated.details["after"]["model"] == "m2"
    assert updated.details["changed"] == ["api_key_hint", "model"]
    dumped = json.dumps([created.details, updated.details])
    assert "first-secret" not in dumped and "second-secret" not in dumped

    client.post(f"{LLM}{config.pk}/delete/", {"post": "yes"})
    assert _events("llm_config.deleted")[0].details["before"]["name"] == "audited"


def test_rest_changes_are_audited_with_the_key_as_actor(world, as_key):
    api = as_key(world.alpha.keys["admin"])

    response = api.post(
        "/api/v1/orgs/alpha/llm-configs/",
        {"name": "rest-audited", "provider": "offline", "model": "m", "api_key": "sk-rest-99999"},
        format="json",
    )

    assert response.status_code == 201, response.content
    event = _events("llm_config.created")[0]
    assert event.target == "rest-audited"
    assert event.actor.startswith("key:")
    assert "sk-rest-99999" not in json.dumps(event.details)


def test_a_change_from_code_or_a_command_is_audited_as_system(world):
    from orchestrators.services import llm_config_create, orchestrator_create, orchestrator_update

    with schema_context("org_alpha"):
        config = llm_config_create(name="cmd", provider="offline", model="m")
        instance = orchestrator_create(slug="cmd-bot", name="Cmd", llm_config=config)
        orchestrator_update(instance=instance, name="Cmd two", tools=["clock"])

    event = _events("orchestrator.updated")[0]
    assert event.actor == "system"
    assert event.details["changed"] == ["name", "tools", "version"]
    assert event.details["before"]["name"] == "Cmd" and event.details["after"]["tools"] == ["clock"]


def test_audit_values_under_secret_keys_are_masked_at_any_depth():
    from tenants.audit.changes import MASK, masked

    value = {"tools": [{"headers": {"Authorization": "Bearer x", "max_tokens": 5}}], "api_key": "k"}

    assert masked(value) == {
        "tools": [{"headers": {"Authorization": MASK, "max_tokens": 5}}],
        "api_key": MASK,
    }


def test_the_audit_list_filters_by_action_and_actor_kind(world):
    from orchestrators.services import llm_config_create

    with schema_context("org_alpha"):
        llm_config_create(name="filter-me", provider="offline", model="m")
    client = _client(world.alpha.users["admin"])

    by_action = client.get("/orgs/alpha/admin/audit/auditevent/?action=llm_config.created")
    by_kind = client.get("/orgs/alpha/admin/audit/auditevent/?actor_kind=system")

    assert by_action.status_code == by_kind.status_code == 200
    assert {e.action for e in by_action.context["cl"].result_list} == {"llm_config.created"}
    assert all(not e.actor.startswith(("user:", "key:")) for e in by_kind.context["cl"].result_list)
    assert "filter-me" in by_action.content.decode()
    # The trail names members and keys: not for members and viewers.
    assert (
        _client(world.alpha.users["viewer"]).get("/orgs/alpha/admin/audit/auditevent/").status_code
        == 403
    )


def test_flow_errors_are_listed_at_their_path(world):
    with schema_context("org_alpha"):
        from orchestrators.services import llm_config_create

        config = llm_config_create(name="paths", provider="offline", model="m")
    flow = {"name": "f", "steps": [{"then": "prepare_prompt"}, {"then": "nope"}, {"sync": 3}]}

    response = _client(world.alpha.users["owner"]).post(
        f"{ORCH}add/", _orch_form(config.pk, flow=json.dumps(flow))
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["flow"]
    assert any(e.startswith("at /steps/1/then: ") and "nope" in e for e in errors)
    assert any(e.startswith("at /steps/2") for e in errors)
    with schema_context("org_alpha"):
        assert not OrchestratorInstance.objects.filter(slug="aud").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"name": "f",\n "steps": [}', "line 2, column 12"),
        ("[" * 150_000 + "]" * 150_000, "At most"),
        ("[" * 20_000 + "]" * 20_000, "nested too deeply"),
    ],
)
def test_bad_json_in_the_flow_is_a_form_error_not_a_500(world, text, expected):
    with schema_context("org_alpha"):
        from orchestrators.services import llm_config_create

        config = llm_config_create(name="bad-json", provider="offline", model="m")

    response = _client(world.alpha.users["owner"]).post(
        f"{ORCH}add/", _orch_form(config.pk, flow=text)
    )

    assert response.status_code == 200
    assert expected in str(response.context["adminform"].form.errors["flow"])


def test_the_orchestrator_page_draws_the_flow_and_shows_its_build_status(world):
    with schema_context("org_alpha"):
        from orchestrators.services import llm_config_create, orchestrator_create

        config = llm_config_create(name="draw", provider="offline", model="m")
        instance = orchestrator_create(slug="draw", name="Draw", llm_config=config)

    page = _client(world.alpha.users["viewer"]).get(f"{ORCH}{instance.pk}/change/").content.decode()

    assert "/static/vendor/mermaid/mermaid.min.js" in page
    assert '<pre class="mermaid">flowchart' in page
    assert 'id="build-status">building<' in page
