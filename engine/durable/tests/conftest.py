from __future__ import annotations

import json
import uuid

import pytest

from chat.tests.conftest import chat_orchestrator  # noqa: F401


@pytest.fixture
def queue_name(settings, monkeypatch):
    """Runs of this test go to a queue of their own (never another test's or a real worker's);
    the Celery token is not published (the test calls the worker's function itself)."""
    from engine.durable.tasks import run_next

    monkeypatch.setattr(run_next, "apply_async", lambda *args, **kwargs: None)
    name = f"test-{uuid.uuid4().hex[:10]}"
    settings.CADENCE_ORG_QUEUES = {"alpha": name, "bravo": name}
    yield name
    from engine.durable.services import _redis

    client = _redis()
    keys = list(client.scan_iter(match=f"cadence:runq:{name}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def no_dispatch(monkeypatch):
    """Record dispatches instead of publishing Celery messages."""
    sent: list[dict] = []
    from engine.durable import services

    def record(**kwargs):
        from engine.durable import fairqueue

        fairqueue.push(
            services._redis(),
            queue=kwargs["queue"],
            schema_name=kwargs["schema_name"],
            run_id=kwargs["run_id"],
        )
        sent.append(kwargs)

    monkeypatch.setattr(services, "_dispatch", record)
    return sent


# A flow whose second measure calls the HTTP tool and whose third streams a reply: a worker
# killed in the third resumes after the tool's measure and must not call the tool again.
TOOL_FLOW = {
    "name": "charge",
    "steps": [
        {"then": "prepare_prompt"},
        {"then": "agent"},
        {"then": "agent"},
        {"then": "finalize"},
    ],
}


def tool_message(url: str) -> str:
    return "/tool http_get " + json.dumps({"url": url})


@pytest.fixture
def tool_orchestrator(world, committed_db, settings):
    """An offline orchestrator in alpha with the http_get tool, on TOOL_FLOW; `model` per test."""
    from django_tenants.utils import schema_context

    from orchestrators.models import LLMConfig, OrchestratorInstance
    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build

    settings.CADENCE_EGRESS_ALLOW_PRIVATE = True

    def cleanup():
        with schema_context("org_alpha"):
            OrchestratorInstance.objects.filter(slug="chargebot").delete()
            LLMConfig.objects.filter(name="charge-llm").delete()

    def make(model: str = "cadence-offline@20ms"):
        cleanup()
        with schema_context("org_alpha"):
            llm = llm_config_create(name="charge-llm", provider="offline", model=model)
            instance = orchestrator_create(
                slug="chargebot", name="Chargebot", llm_config=llm, tools=["http_get"],
                flow=TOOL_FLOW,
            )  # fmt: skip
        assert instance_build(
            schema_name="org_alpha", instance_id=str(instance.id), expected_hash=instance.config_hash
        ) == "ready"  # fmt: skip
        return instance

    yield make
    cleanup()
