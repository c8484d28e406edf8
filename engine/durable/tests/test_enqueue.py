"""POST …/orchestrators/<id>/runs/: 202 with the run, idempotent, refused input queues nothing."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from engine.durable import fairqueue
from engine.durable.models import QueuedRun
from engine.durable.services import _redis
from engine.models import Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def bot(world):
    from orchestrators.models import OrchestratorInstance
    from orchestrators.services import llm_config_create, orchestrator_create

    with schema_context("org_alpha"):
        llm = llm_config_create(name="queue-offline", provider="offline", model="cadence-offline")
        instance = orchestrator_create(slug="queuebot", name="Queuebot", llm_config=llm)
        OrchestratorInstance.objects.filter(pk=instance.pk).update(status="ready")
        instance.refresh_from_db()
        return instance


def _post(api, instance, body):
    return api.post(f"/api/v1/orgs/alpha/orchestrators/{instance.id}/runs/", body, format="json")


def _counts():
    with schema_context("org_alpha"):
        return QueuedRun.objects.count(), Run.objects.filter(status="queued").count()


def test_enqueue_answers_202_with_a_queued_run_pinned_to_its_snapshot(
    world, as_key, bot, queue_name, no_dispatch, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(
            as_key(world.alpha.keys["member"]),
            bot,
            {"input": {"message": "hello"}, "idempotency_key": "order-1"},
        )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert (body["status"], body["state"], body["attempts"]) == ("queued", "queued", 0)
    with schema_context("org_alpha"):
        run = Run.objects.get(pk=body["id"])
        assert (run.trigger, run.status, run.input) == ("queue", "queued", {"message": "hello"})
        assert run.snapshot.value["system_prompt"] == bot.system_prompt
    assert no_dispatch == [{"schema_name": "org_alpha", "run_id": body["id"], "queue": queue_name}]
    assert fairqueue.pending(_redis(), queue=queue_name, schema_name="org_alpha") == [body["id"]]


def test_the_same_idempotency_key_returns_the_same_run(
    world, as_key, bot, queue_name, no_dispatch, django_capture_on_commit_callbacks
):
    api = as_key(world.alpha.keys["member"])
    with django_capture_on_commit_callbacks(execute=True):
        first = _post(api, bot, {"input": {"message": "a"}, "idempotency_key": "same"})
        second = _post(api, bot, {"input": {"message": "a"}, "idempotency_key": "same"})
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["id"] == second.json()["id"]
    assert len(no_dispatch) == 1
    with schema_context("org_alpha"):
        assert QueuedRun.objects.filter(idempotency_key="same").count() == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            {"input": {"message": "x"}, "idempotency_key": "bad key!"},
            400,
            "invalid_idempotency_key",
        ),
        ({"input": {"message": "x"}, "idempotency_key": ""}, 400, "invalid"),
        ({"input": {"message": "x" * 70_000}, "idempotency_key": "big"}, 400, "invalid"),
        ({"input": {"message": "x\x00"}, "idempotency_key": "nul"}, 400, "invalid"),
        (
            {"input": {"message": "x"}, "idempotency_key": "k", "deadline": "2000-01-01T00:00:00Z"},
            400,
            "invalid",
        ),
        ({"input": {"message": "x"}, "idempotency_key": "k", "extra": 1}, 400, "invalid"),
        ({"input": "x", "idempotency_key": "k"}, 400, "invalid"),
        (
            {
                "input": {"message": "x"},
                "idempotency_key": "k",
                "callback_url": "http://169.254.169.254/",
            },
            400,
            "egress_denied",
        ),
    ],
)
def test_bad_input_is_a_clear_4xx_and_nothing_is_queued(
    world, as_key, bot, queue_name, no_dispatch, body, status, code
):
    before = _counts()
    response = _post(as_key(world.alpha.keys["member"]), bot, body)
    assert response.status_code == status, response.json()
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code or code == "invalid", error
    assert _counts() == before and no_dispatch == []


def test_an_unknown_or_suspended_orchestrator_queues_nothing(world, as_key, bot, no_dispatch):
    from orchestrators.models import OrchestratorInstance

    api = as_key(world.alpha.keys["member"])
    before = _counts()
    missing = api.post(
        "/api/v1/orgs/alpha/orchestrators/00000000-0000-0000-0000-000000000000/runs/",
        {"input": {"message": "x"}, "idempotency_key": "k1"},
        format="json",
    )
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "orchestrator_not_found")
    with schema_context("org_alpha"):
        OrchestratorInstance.objects.filter(pk=bot.pk).update(status="suspended")
    suspended = _post(api, bot, {"input": {"message": "x"}, "idempotency_key": "k2"})
    assert (suspended.status_code, suspended.json()["error"]["code"]) == (
        409,
        "orchestrator_suspended",
    )
    assert _counts() == before and no_dispatch == []


def test_outsiders_and_a_viewer_are_refused_and_nothing_is_queued(
    world, as_key, as_user, api, bot, no_dispatch
):
    body = {"input": {"message": "x"}, "idempotency_key": "outsider"}
    before = _counts()
    assert _post(as_key(world.bravo.keys["owner"]), bot, body).status_code == 404
    assert _post(as_key(world.alpha.keys["viewer"]), bot, body).status_code == 403
    api.credentials()
    assert _post(as_user(world.outsider), bot, body).status_code == 404
    assert _post(as_user(world.bravo.users["owner"]), bot, body).status_code == 404
    assert _counts() == before and no_dispatch == []


def test_dead_letter_endpoints_need_admin_to_act_and_hide_from_outsiders(world, as_key, bot):
    with schema_context("org_alpha"):
        run = Run.objects.create(
            orchestrator_slug="queuebot",
            trigger="queue",
            status="failed",
            input={},
            # Queued by the viewer's key: members and viewers read their own runs' dead letters.
            owner_api_key_id=world.alpha.key_ids["viewer"],
        )
        queued = QueuedRun.objects.create(
            run=run,
            idempotency_key="dead-1",
            orchestrator_id=bot.id,
            message="x",
            queue="runs",
            state="dead",
            attempts=1,
            reason="llm_unavailable: down (last step: agent)",
            created_at=timezone.now() - dt.timedelta(minutes=1),
        )
    listing = as_key(world.alpha.keys["viewer"]).get("/api/v1/orgs/alpha/dead-letters/")
    assert [d["id"] for d in listing.json()["results"]] == [str(run.id)]
    # Another member sees neither the list entry nor the letter.
    others = as_key(world.alpha.keys["member"])
    assert others.get("/api/v1/orgs/alpha/dead-letters/").json()["results"] == []
    assert others.get(f"/api/v1/orgs/alpha/dead-letters/{run.id}/").status_code == 404
    assert listing.json()["results"][0]["reason"] == "llm_unavailable: down (last step: agent)"
    for key, status in (("member", 403), ("viewer", 403)):
        for action in ("replay", "discard"):
            response = as_key(world.alpha.keys[key]).post(
                f"/api/v1/orgs/alpha/dead-letters/{run.id}/{action}/"
            )
            assert response.status_code == status
    assert (
        as_key(world.bravo.keys["owner"]).get("/api/v1/orgs/alpha/dead-letters/").status_code == 404
    )
    with schema_context("org_alpha"):
        assert QueuedRun.objects.get(pk=queued.pk).state == "dead"
    discarded = as_key(world.alpha.keys["admin"]).post(
        f"/api/v1/orgs/alpha/dead-letters/{run.id}/discard/"
    )
    assert (discarded.status_code, discarded.json()["state"]) == (200, "discarded")
    again = as_key(world.alpha.keys["admin"]).post(
        f"/api/v1/orgs/alpha/dead-letters/{run.id}/replay/"
    )
    assert (again.status_code, again.json()["error"]["code"]) == (409, "not_dead_letter")
    with schema_context("org_alpha"):
        from tenants.audit.models import AuditEvent

        audited = list(
            AuditEvent.objects.filter(action__startswith="dead_letter.").values_list(
                "action", "target", "details"
            )
        )
    assert audited == [
        (
            "dead_letter.discarded",
            str(run.id),
            {
                "before": {"state": "dead", "reason": "llm_unavailable: down (last step: agent)"},
                "after": {"state": "discarded"},
                "changed": ["reason", "state"],
            },
        )
    ]
