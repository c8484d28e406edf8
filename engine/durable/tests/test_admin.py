"""Dead letters in the organization's admin: everyone reads, admins replay and discard."""

from __future__ import annotations

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from engine.durable.models import QueuedRun
from engine.models import Run

pytestmark = pytest.mark.django_db
URL = "/orgs/alpha/admin/durable/queuedrun/"


@pytest.fixture
def dead(world, monkeypatch):
    from engine.durable import services

    monkeypatch.setattr(services, "_dispatch", lambda **kwargs: None)
    with schema_context("org_alpha"):
        run = Run.objects.create(orchestrator_slug="x", trigger="queue", status="failed", input={})
        return QueuedRun.objects.create(
            run=run,
            idempotency_key=f"admin-{run.id}",
            orchestrator_id=run.id,
            message="m",
            queue="runs",
            state="dead",
            attempts=1,
            reason="llm_unavailable: down",
        )


def _client(user):
    client = Client()
    client.force_login(user)
    return client


def test_a_member_sees_dead_letters_but_cannot_act(world, dead):
    client = _client(world.alpha.users["member"])
    page = client.get(URL)
    assert page.status_code == 200 and b"llm_unavailable: down" in page.content
    client.post(URL, {"action": "discard", "_selected_action": [str(dead.pk)]})
    with schema_context("org_alpha"):
        assert QueuedRun.objects.get(pk=dead.pk).state == "dead"


def test_an_admin_replays_a_dead_letter_from_the_admin(
    world, dead, django_capture_on_commit_callbacks
):
    client = _client(world.alpha.users["admin"])
    response = client.post(URL, {"action": "replay", "_selected_action": [str(dead.pk)]})
    assert response.status_code == 302
    with schema_context("org_alpha"):
        assert QueuedRun.objects.get(pk=dead.pk).state == "discarded"
        replay = QueuedRun.objects.get(replay_of=dead.pk)
        assert (replay.state, replay.run.status) == ("queued", "queued")
