from __future__ import annotations

import json
import uuid

import pytest

from chat.tests.conftest import chat_orchestrator  # noqa: F401
from engine.runs.tests.conftest import flaky  # noqa: F401
from orchestrators.tests.conftest import _openai_server_process, openai_server  # noqa: F401


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


def tool_message(url: str) -> str:
    return "/tool http_get " + json.dumps({"url": url})


@pytest.fixture
def tool_orchestrator(world, committed_db, settings):
    """An offline orchestrator in alpha with the http_get tool, on crash_harness.TOOL_FLOW."""
    from django_tenants.utils import schema_context

    from engine.durable.tests.crash_harness import tool_orchestrator_make
    from orchestrators.models import LLMConfig, OrchestratorInstance

    settings.CADENCE_EGRESS_ALLOW_PRIVATE = True

    def cleanup():
        with schema_context("org_alpha"):
            OrchestratorInstance.objects.filter(slug="chargebot").delete()
            LLMConfig.objects.filter(name="charge-llm").delete()

    def make(model: str = "cadence-offline@20ms"):
        cleanup()
        return tool_orchestrator_make(schema="org_alpha", model=model)

    yield make
    cleanup()
