"""The shipped examples, packed by the CLI and run end to end; the CLI's own behaviour."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django_tenants.utils import schema_context

from engine.plugin_commands import _files
from plugins.archive import inspect_package, pack
from plugins.services import plugin_upload

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BASE = "/api/v1/orgs/alpha"


def example(name: str, **manifest_changes) -> bytes:
    files = _files(EXAMPLES / name)
    if manifest_changes:
        data = json.loads(files["cadence-plugin.json"]) | manifest_changes
        files["cadence-plugin.json"] = json.dumps(data).encode()
    return pack(files)


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", "plugin", *args],
        capture_output=True,
        text=True,
        cwd=cwd or Path(__file__).resolve().parents[2],
        timeout=60,
    )


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
def test_every_example_validates_and_packs_deterministically(name, tmp_path):
    result = cli("validate", str(EXAMPLES / name))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "p.zip"
    assert cli("pack", str(EXAMPLES / name), "-o", str(out)).returncode == 0
    assert out.read_bytes() == example(name)
    assert inspect_package(out.read_bytes()).sha256 in cli("validate", str(out)).stdout


def test_new_scaffolds_a_valid_plugin_and_validate_lists_every_issue(tmp_path):
    target = tmp_path / "thing"
    result = cli("new", str(target), "--id", "com.example.thing")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in target.rglob("*") if p.is_file()) == [
        "README.md",
        "cadence-plugin.json",
        "summarize.py",
    ]
    assert cli("validate", str(target)).returncode == 0
    (target / "cadence-plugin.json").write_text(
        '{"schema_version": 1, "id": "x", "kind": "tenant", "bogus": 1}'
    )
    result = cli("validate", str(target))
    assert result.returncode == 1
    assert (
        "/id:" in result.stderr
        and "bogus" in result.stderr
        and "'name' is a required property" in result.stderr
    )
    assert (
        cli("new", str(target), "--id", "com.example.thing").returncode != 0
    )  # not over an existing folder


@pytest.fixture
def eager():
    from cadence_site.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def _llm(client) -> str:
    return client.post(
        f"{BASE}/llm-configs/",
        {"name": "offline", "provider": "offline", "model": "m"},
        format="json",
    ).json()["id"]


def _upload(client, raw):
    response = client.post(
        f"{BASE}/plugins/", {"package": SimpleUploadedFile("p.zip", raw)}, format="multipart"
    )
    assert response.status_code == 201, response.json()


def _orchestrator(client, captured, **body):
    with captured(execute=True):
        response = client.post(
            f"{BASE}/orchestrators/",
            {"slug": "ex", "name": "Ex", "llm_config": _llm(client)} | body,
            format="json",
        )
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def _say(client, instance_id, text):
    response = client.post(
        f"{BASE}/orchestrators/{instance_id}/invoke/",
        {"messages": [{"role": "user", "content": text}]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    return response.json()


@pytest.mark.django_db
def test_weather_example_calls_the_local_http_server(
    world, as_key, http_server, eager, django_capture_on_commit_callbacks
):
    data = json.loads(_files(EXAMPLES / "weather")["cadence-plugin.json"])
    tool = data["provides"]["tools"][0] | {"url": http_server.base_url + "/v1/forecast/{city}"}
    admin = as_key(world.alpha.keys["admin"])
    _upload(
        admin,
        example(
            "weather",
            provides={"tools": [tool]},
            capabilities={"egress": ["127.0.0.1"], "secrets": ["api_key"]},
        ),
    )
    instance_id = _orchestrator(
        admin,
        django_capture_on_commit_callbacks,
        plugins=[{"id": "com.example.weather", "settings": {"api_key": "wx-12345678"}}],
    )
    reply = _say(admin, instance_id, '/tool forecast {"city": "Lima", "units": "metric"}')
    assert reply["tool_calls"][0]["result"]["json"] == {
        "path": "/v1/forecast/Lima?units=metric",
        "ok": True,
    }
    assert http_server.requests[-1]["headers"]["Authorization"] == "Bearer wx-12345678"


@pytest.mark.django_db
def test_signed_replies_and_redact_examples(
    world, as_key, eager, django_capture_on_commit_callbacks
):
    admin = as_key(world.alpha.keys["admin"])
    _upload(admin, example("signed-replies"))
    instance_id = _orchestrator(
        admin,
        django_capture_on_commit_callbacks,
        flow={"use": "com.example.signed-replies/signed"},
        system_prompt="{{plugin:com.example.signed-replies/concise}}",
        plugins=[
            {"id": "com.example.signed-replies", "settings": {"signature": "The Cadence team"}}
        ],
    )
    assert (
        _say(admin, instance_id, "hi")["message"]["content"]
        == "Offline model. You said: hi\n-- The Cadence team"
    )
    _upload(admin, example("redact"))
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.patch(
            f"{BASE}/orchestrators/{instance_id}/",
            {
                "flow": {"use": "com.example.redact/redacted"},
                "plugins": [{"id": "com.example.redact"}],
            },
            format="json",
        )
    # The system prompt still names a template of the plugin just removed: refused, named.
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_plugin_prompt"
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.patch(
            f"{BASE}/orchestrators/{instance_id}/",
            {
                "flow": {"use": "com.example.redact/redacted"},
                "system_prompt": "",
                "plugins": [{"id": "com.example.redact"}],
            },
            format="json",
        )
    assert response.status_code == 200, response.json()
    reply = _say(admin, instance_id, "write to bob@example.com")
    assert reply["message"]["content"] == "Offline model. You said: write to [email]"


@pytest.mark.django_db
def test_text_tools_system_example(world, as_key, eager, django_capture_on_commit_callbacks):
    with schema_context("public"):
        plugin_upload(raw=example("text-tools"), uploaded_by="ops")
    admin = as_key(world.alpha.keys["admin"])
    instance_id = _orchestrator(
        admin, django_capture_on_commit_callbacks, plugins=[{"id": "io.cadence.text-tools"}]
    )
    reply = _say(admin, instance_id, '/tool slugify {"title": "Héllo, World!"}')
    assert reply["tool_calls"][0]["result"] == {"slug": "hello-world"}
