"""The OpenAPI schema tells the truth: valid OpenAPI 3.1, and every operation answers as documented.

The walker reads the schema, not a list of endpoints: an endpoint added later is called as soon
as it is in the schema. Against a live server (uvicorn, as `make run` serves) on the test
database, in a scratch organization made for this module, every operation is called at most
three times, in a fixed order: without credentials, with a body the schema refuses, and with a
body built from its schema. Each answer must be documented: its status, its content type, and
its body, validated against the documented schema with every declared object closed (a field the
schema does not list fails the test).
"""

from __future__ import annotations

import copy
import re
import uuid
from typing import Any

import httpx
import jsonschema
import pytest
from django_tenants.utils import schema_context

from cadence_site.testing import start_live_server, test_database_url

SLUG = "schemawalk"
MODEL = "walker-bot"
PHASES = {"create": 0, "read": 1, "change": 2, "delete": 3}


# --- the schema ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    GENERATOR_STATS.reset()
    generated = SchemaGenerator().get_schema(request=None, public=True)
    problems = {**GENERATOR_STATS._warn_cache, **GENERATOR_STATS._error_cache}
    GENERATOR_STATS.reset()
    assert not problems, "drf-spectacular warned:\n" + "\n".join(problems)
    return generated


def _operations(schema: dict[str, Any]):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method.upper(), operation


def test_the_schema_is_valid_openapi_3_1(schema):
    from openapi_spec_validator import validate

    validate(copy.deepcopy(schema))
    assert schema["openapi"] == "3.1.0"
    assert set(schema["components"]["securitySchemes"]) == {"apiKey", "session"}
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


def test_every_operation_is_described_for_people(schema):
    for path, method, operation in _operations(schema):
        where = f"{method} {path}"
        assert operation.get("summary"), f"{where} has no summary"
        assert operation.get("security"), f"{where} declares no security"
        assert len(operation["summary"]) <= 80, where
        # A maintainer's docstring leaks as a long multi-line description.
        assert "\n" not in operation.get("description", ""), where
        for status, response in operation["responses"].items():
            assert response.get("description"), f"{where} {status} has no description"


def test_inputs_have_distinct_names_and_real_bodies(schema):
    bodies = {}
    for path, method, operation in _operations(schema):
        for media in operation.get("requestBody", {}).get("content", {}).values():
            bodies[(path, method)] = media["schema"]["$ref"].rsplit("/", 1)[1]
    assert bodies[("/api/v1/orgs/", "POST")] == "OrgListCreateInputRequest"
    assert bodies[("/api/v1/orgs/{org_slug}/members/", "POST")] == "MemberListInputRequest"
    assert bodies[("/api/v1/orgs/{org_slug}/api-keys/", "POST")] == "ApiKeyListInputRequest"
    messages = "/api/v1/orgs/{org_slug}/conversations/{conversation_id}/messages/"
    assert bodies[(messages, "POST")] == "MessageListInputRequest"
    assert "/v1/chat/completions" in schema["paths"]
    listed = schema["paths"][messages]["get"]["parameters"]
    assert {p["name"] for p in listed if p["in"] == "query"} >= {"after", "limit"}
    for path, method, operation in _operations(schema):
        for status, response in operation["responses"].items():
            if status.startswith("2") and status != "204":
                assert response.get("content"), f"{method} {path} {status} has no body"


# --- the walker ---------------------------------------------------------------------------------


def _resolver_schema(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """`node` with the components beside it and every declared object closed."""

    def close(value):
        if isinstance(value, dict):
            value = {k: close(v) for k, v in value.items()}
            if "properties" in value and "additionalProperties" not in value:
                value["additionalProperties"] = False
            return value
        if isinstance(value, list):
            return [close(v) for v in value]
        return value

    return {**close(node), "components": close(schema["components"])}


def _deref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


class Values:
    """A value for every property the walker has to fill, found by name, else from its schema."""

    def __init__(self, known: dict[str, Any]):
        self.known = known
        self.counter = 0

    def unique(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def build(self, schema: dict[str, Any], node: dict[str, Any], name: str = "") -> Any:
        node = _deref(schema, node)
        if name in self.known:
            return self.known[name]
        if "examples" in node:
            example = copy.deepcopy(node["examples"][0])
            if isinstance(example, dict):
                example.update({k: v for k, v in self.known.items() if k in example})
            return example
        if "const" in node:
            return node["const"]
        if "enum" in node:
            return next(v for v in node["enum"] if v is not None)
        if "oneOf" in node or "anyOf" in node:
            return self.build(schema, (node.get("oneOf") or node["anyOf"])[0], name)
        kind = node.get("type", "object")
        if isinstance(kind, list):
            kind = next(k for k in kind if k != "null")
        if kind == "object":
            return {
                key: self.build(schema, sub, key)
                for key, sub in node.get("properties", {}).items()
                if key in node.get("required", []) or key in self.known
            }
        if kind == "array":
            return [self.build(schema, node.get("items", {}), name)] * node.get("minItems", 0)
        if kind == "integer":
            return max(1, node.get("minimum", 1))
        if kind == "number":
            return node.get("minimum", 1)
        if kind == "boolean":
            return False
        if node.get("format") == "email":
            return f"{self.unique('walker')}@{SLUG}.test"
        if node.get("format") == "uuid":
            return str(uuid.uuid4())
        if node.get("format") == "date-time":
            return "2099-01-01T00:00:00Z"
        if node.get("pattern"):
            return self.unique("w")
        return self.unique(f"{name or 'text'}-")


def _phase(path: str, method: str, paths: dict[str, Any]) -> int:
    if method == "DELETE":
        return PHASES["delete"]
    if method == "GET":
        return PHASES["read"]
    if method == "POST" and "get" in paths[path]:
        return PHASES["create"]
    return PHASES["change"]


def _check(schema, operation, where: str, response: httpx.Response) -> None:
    status = str(response.status_code)
    documented = operation["responses"]
    assert status in documented, f"{where}: {status} is not documented: {response.text[:300]}"
    content = documented[status].get("content")
    if not content:
        assert not response.content, f"{where}: {status} documents no body"
        return
    media = response.headers.get("content-type", "").split(";")[0]
    assert media in content, f"{where}: {status} {media} is not documented ({list(content)})"
    if media == "application/json":
        body = response.json()
        node = _resolver_schema(schema, content[media]["schema"])
        try:
            jsonschema.Draft202012Validator(node).validate(body)
        except jsonschema.ValidationError as exc:
            raise AssertionError(
                f"{where}: {status} body not as documented: {exc.message}"
            ) from None


def _url(path: str, params: dict[str, str], created: dict[str, str], client) -> str:
    url = path
    for name in re.findall(r"\{(\w+)\}", path):
        value = params.get(name)
        if value is None:
            prefix = path[: path.index("{" + name + "}")]
            value = (
                created.get(prefix)
                or _first_listed(client, _fill(prefix, params))
                or str(uuid.uuid4())
            )
        url = url.replace("{" + name + "}", value)
    return url


def _fill(path: str, params: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: params.get(m.group(1), m.group(0)), path)


def _first_listed(client, collection: str) -> str | None:
    if "{" in collection:
        return None
    response = client.get(collection)
    if response.status_code != 200:
        return None
    results = response.json().get("results") or []
    return str(results[-1]["id"]) if results and "id" in results[-1] else None


@pytest.fixture(scope="module")
def scratch(module_world, django_db_blocker):
    """A scratch organization with a ready offline orchestrator, served by a live server."""
    from django.contrib.auth import get_user_model

    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build
    from tenants.models import Organization
    from tenants.services import organization_create, organization_delete

    def cleanup():
        for org in Organization.objects.filter(slug=SLUG):
            organization_delete(org=org)
        get_user_model().objects.filter(email__endswith=f"@{SLUG}.test").delete()

    with django_db_blocker.unblock():
        cleanup()
        created = organization_create(
            name="Schema walk", slug=SLUG, owner_email=f"owner@{SLUG}.test"
        )
        with schema_context(created.organization.schema_name):
            config = llm_config_create(name="walker", provider="offline", model="cadence-offline")
            instance = orchestrator_create(slug=MODEL, name="Walker", llm_config=config)
            assert (
                instance_build(
                    schema_name=created.organization.schema_name,
                    instance_id=str(instance.id),
                    expected_hash=instance.config_hash,
                )
                == "ready"
            )
        server = start_live_server(test_database_url(), CADENCE_CELERY_EAGER="true")
    try:
        yield {"base": server.url, "key": created.api_key_secret, "config": str(config.id)}
    finally:
        server.stop()
        with django_db_blocker.unblock():
            cleanup()


def test_every_operation_answers_as_documented(schema, scratch, committed_db):
    paths = schema["paths"]
    operations = sorted(
        _operations(schema),
        # /v1 before /api within a phase: the walk suspends an orchestrator it created, never
        # the one /v1 talks to, but a fallback id could be that one.
        key=lambda op: (_phase(op[0], op[1], paths), op[0].startswith("/api/"), op[0], op[1]),
    )
    params = {"org_slug": SLUG, "model": MODEL}
    values = Values({"orchestrator": MODEL, "llm_config": scratch["config"], "model": MODEL})
    created: dict[str, str] = {}
    headers = {"Authorization": f"Bearer {scratch['key']}"}
    with (
        httpx.Client(base_url=scratch["base"], timeout=30) as anonymous,
        httpx.Client(base_url=scratch["base"], timeout=30, headers=headers) as client,
    ):
        for path, method, operation in operations:
            url = _url(path, params, created, client)
            where = f"{method} {url}"
            _check(schema, operation, f"{where} (anonymous)", anonymous.request(method, url))
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                refused = client.request(method, url, json=["not", "an", "object"])
                assert 400 <= refused.status_code < 500, (
                    f"{where}: a list body got {refused.status_code}"
                )
                _check(schema, operation, f"{where} (refused body)", refused)
                payload = values.build(schema, body["schema"])
                response = client.request(method, url, json=payload)
            else:
                response = client.request(method, url)
            _check(schema, operation, where, response)
            if _phase(path, method, paths) == PHASES["create"] and response.status_code == 201:
                created[path] = str(response.json().get("id", "")) or created.get(path, "")
    # The walk reached real successes, not only refusals.
    assert set(created) >= {
        "/api/v1/orgs/{org_slug}/conversations/",
        "/api/v1/orgs/{org_slug}/orchestrators/",
        "/api/v1/orgs/{org_slug}/llm-configs/",
        "/api/v1/orgs/{org_slug}/api-keys/",
    }
