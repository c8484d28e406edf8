from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from tenants.models import ApiKey
from tenants.selectors import api_key_cache_key

pytestmark = pytest.mark.django_db


def _error(response):
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return body["error"]


def test_no_credentials_is_401(world, api):
    response = api.get("/api/v1/orgs/alpha/")

    assert response.status_code == 401
    assert _error(response)["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_malformed_json_is_400(world, as_key):
    response = as_key(world.alpha.keys["admin"]).generic(
        "PATCH", "/api/v1/orgs/alpha/", "{not json", content_type="application/json"
    )

    assert response.status_code == 400
    assert _error(response)["code"] == "malformed_json"


def test_oversized_body_is_413(world, as_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = '{"name": "' + "x" * 2000 + '"}'

    response = as_key(world.alpha.keys["admin"]).generic(
        "PATCH", "/api/v1/orgs/alpha/", body, content_type="application/json"
    )

    assert response.status_code == 413
    assert _error(response) == {
        "code": "payload_too_large",
        "message": "The request body exceeds the limit of 1000 bytes.",
        "details": {"limit_bytes": 1000},
    }


def test_wrong_content_type_is_415(world, as_key):
    response = as_key(world.alpha.keys["admin"]).generic(
        "PATCH", "/api/v1/orgs/alpha/", "name=x", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 415
    assert _error(response)["code"] == "unsupported_media_type"


def test_unknown_field_is_400_naming_it(world, as_key):
    response = as_key(world.alpha.keys["admin"]).patch(
        "/api/v1/orgs/alpha/", {"name": "A", "colour": "red"}, format="json"
    )

    assert response.status_code == 400
    assert _error(response)["details"] == {"colour": ["Unknown field."]}


def test_non_object_body_is_400(world, as_key):
    response = as_key(world.alpha.keys["admin"]).patch("/api/v1/orgs/alpha/", [1, 2], format="json")

    assert response.status_code == 400
    assert _error(response)["code"] == "invalid"


def test_invalid_choice_is_400_naming_the_field(world, as_key):
    response = as_key(world.alpha.keys["admin"]).post(
        "/api/v1/orgs/alpha/members/", {"email": "a@b.test", "role": "god"}, format="json"
    )

    assert response.status_code == 400
    assert list(_error(response)["details"]) == ["role"]


def test_expired_key_is_401(world, as_key):
    key = ApiKey.objects.get(pk=world.alpha.key_ids["viewer"])
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    cache.delete(api_key_cache_key(key.prefix))  # changed behind the services' back
    try:
        response = as_key(world.alpha.keys["viewer"]).get("/api/v1/orgs/alpha/")
    finally:
        ApiKey.objects.filter(pk=key.pk).update(expires_at=None)
        cache.delete(api_key_cache_key(key.prefix))

    assert response.status_code == 401
    assert _error(response)["code"] == "api_key_expired"


def test_garbage_key_is_401(world, as_key):
    for token in ("ck_nope", "ck_" + "a" * 43, "x" * 5000, ""):
        response = as_key(token).get("/api/v1/orgs/alpha/")
        assert response.status_code == 401, token
        assert _error(response)["code"] in ("invalid_api_key", "not_authenticated")


def test_expiry_in_the_past_is_400(world, as_key):
    response = as_key(world.alpha.keys["admin"]).post(
        "/api/v1/orgs/alpha/api-keys/",
        {"name": "old", "expires_at": "2000-01-01T00:00:00Z"},
        format="json",
    )

    assert response.status_code == 400
    assert _error(response)["code"] == "invalid_expiry"


def test_bad_uuid_in_path_is_404_json(world, as_key):
    response = as_key(world.alpha.keys["admin"]).delete("/api/v1/orgs/alpha/api-keys/not-a-uuid/")

    assert response.status_code == 404
    assert _error(response)["code"] == "not_found"


def test_unknown_api_path_is_404_json(world, api):
    response = api.get("/api/v1/nothing-here")

    assert response.status_code == 404
    assert _error(response)["code"] == "not_found"


def test_method_not_allowed_is_405(world, as_key):
    response = as_key(world.alpha.keys["admin"]).put("/api/v1/orgs/alpha/", {}, format="json")

    assert response.status_code == 405
    assert _error(response)["code"] == "method_not_allowed"


def test_session_writes_need_csrf(world):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(world.alpha.users["admin"])

    response = client.patch("/api/v1/orgs/alpha/", {"name": "csrf"}, format="json")

    assert response.status_code == 403
    assert "CSRF" in _error(response)["message"]


def test_healthz_and_readyz(db, client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["redis"]["status"] == "ok"
    assert checks["broker"]["status"] == "ok"


def test_readyz_is_503_when_the_database_is_down(db, client, monkeypatch):
    from cadence_site import health

    def down():
        raise ConnectionError("connection refused")

    monkeypatch.setattr(health, "_database", down)
    response = client.get("/readyz")

    assert response.status_code == 503
    # The kind of failure only: an exception's text names internal hosts and ports.
    assert response.json()["checks"]["database"] == {"status": "down", "error": "ConnectionError"}
    assert response.json()["unavailable"] == ["database"]


def test_openapi_schema_and_docs_are_served_offline(db, client):
    schema = client.get("/api/schema/")
    docs = client.get("/api/docs/")

    assert schema.status_code == 200
    assert b"/api/v1/orgs/{org_slug}/api-keys/" in schema.content
    assert docs.status_code == 200
    assert b"cdn" not in docs.content.lower()
