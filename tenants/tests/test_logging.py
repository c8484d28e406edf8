from __future__ import annotations

import io
import logging

import pytest

from cadence_site.requestlog import ContextFilter, RedactSecretsFilter, redact

pytestmark = pytest.mark.django_db


@pytest.fixture
def captured():
    """Every record from every logger, formatted as production formats it (JSON, filters on)."""
    from django.conf import settings
    from pythonjsonlogger.json import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(settings.LOGGING["formatters"]["json"]["fmt"]))
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactSecretsFilter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_no_secret_reaches_the_logs(world, api, captured, client):
    from tenants.services import organization_create

    created = organization_create(name="Logged", slug="logged", owner_email="o@logged.test")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {created.api_key_secret}")
    key_response = api.post(
        "/api/v1/orgs/logged/api-keys/", {"name": "k", "role": "member"}, format="json"
    )
    second_secret = key_response.json()["key"]
    api.post(
        "/api/v1/orgs/logged/members/", {"email": "m@logged.test", "role": "member"}, format="json"
    )
    ticket = api.post("/api/v1/orgs/logged/ws-tickets/").json()["ticket"]
    api.credentials(HTTP_AUTHORIZATION="Bearer ck_wrong_key_that_is_long_enough_1234567890")
    api.get("/api/v1/orgs/logged/")
    login = client.post(
        "/accounts/login/",
        {"username": created.owner.get_username(), "password": created.owner_password},
    )
    logging.getLogger("probe").warning(
        "user sent %s", {"password": "hunter2-secret", "api_key": second_secret}
    )

    output = captured.getvalue()
    assert login.status_code == 302
    assert "logged" in output  # the flow was logged at all
    for secret in (
        created.api_key_secret,
        second_secret,
        created.owner_password,
        ticket,
        "hunter2-secret",
        "ck_wrong_key_that_is_long_enough_1234567890",
    ):
        assert secret not in output


def test_log_lines_carry_request_id_org_and_principal(world, as_key, captured):
    as_key(world.alpha.keys["admin"]).post(
        "/api/v1/orgs/alpha/api-keys/",
        {"name": "ctx", "role": "viewer"},
        format="json",
        HTTP_X_REQUEST_ID="req-123",
    )

    import json

    lines = [
        json.loads(line) for line in captured.getvalue().splitlines() if '"api key created"' in line
    ]
    assert len(lines) == 1
    assert lines[0]["request_id"] == "req-123"
    assert lines[0]["org"] == "alpha"
    assert lines[0]["principal"].startswith("key:")


def test_4xx_lines_carry_request_id_org_and_principal(world, as_key, captured):
    # Django logs "Not Found: …" after every middleware has returned.
    response = as_key(world.alpha.keys["admin"]).get(
        "/api/v1/orgs/alpha/llm-configs/6b0e8a9e-0000-4000-8000-000000000000/",
        HTTP_X_REQUEST_ID="req-404",
    )

    import json

    lines = [
        json.loads(line)
        for line in captured.getvalue().splitlines()
        if '"django.request"' in line and "Not Found" in line
    ]
    assert response.status_code == 404
    assert len(lines) == 1
    assert (lines[0]["request_id"], lines[0]["org"]) == ("req-404", "alpha")
    assert lines[0]["principal"].startswith("key:")


def test_redact_masks_known_secret_shapes():
    assert redact("key ck_abcdefghijklmnop used") == "key ck_[redacted] used"
    assert redact("Authorization: Bearer abc.def-ghi") == "Authorization: Bearer [redacted]"
    assert redact('{"password": "s3cret!"}') == '{"password": "[redacted]"}'
    assert redact("llm key sk-proj-12345678") == "llm key sk-[redacted]"
