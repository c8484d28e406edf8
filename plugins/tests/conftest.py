"""Plugin test fixtures: packages built in memory, storage in a temporary folder, a local HTTP server."""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from plugins.archive import pack

BASE_MANIFEST = {
    "schema_version": 1,
    "id": "com.acme.weather",
    "name": "Weather",
    "version": "1.0.0",
    "description": "Forecasts.",
    "kind": "tenant",
    "provides": {
        "tools": [
            {
                "name": "forecast",
                "type": "http",
                "description": "The forecast for a city.",
                "method": "GET",
                "url": "https://api.weather.test/v1/forecast/{city}",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 50}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
                "headers": {"Authorization": "Bearer {settings.api_key}"},
            }
        ],
        "prompts": [{"name": "brief", "template": "Be brief about the weather."}],
    },
    "settings": {
        "type": "object",
        "properties": {
            "api_key": {"type": "string", "writeOnly": True, "minLength": 4},
            "units": {"enum": ["metric", "imperial"]},
        },
        "required": ["api_key"],
        "additionalProperties": False,
    },
    "capabilities": {"egress": ["api.weather.test"], "secrets": ["api_key"]},
}


def manifest(**changes) -> dict:
    data = copy.deepcopy(BASE_MANIFEST)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def package(data: dict | None = None, files: dict[str, bytes] | None = None) -> bytes:
    members = {"cadence-plugin.json": json.dumps(data or manifest()).encode()}
    members.update(files or {})
    return pack(members)


def simple(plugin_id: str, version: str = "1.0.0", deps: dict | None = None, **changes) -> bytes:
    """A minimal tenant plugin without tools or settings."""
    data = {
        "schema_version": 1,
        "id": plugin_id,
        "name": plugin_id.rsplit(".", 1)[-1],
        "version": version,
        "kind": "tenant",
    }
    if deps:
        data["dependencies"] = deps
    data.update(changes)
    return package(data)


@pytest.fixture(autouse=True)
def plugin_storage(settings, tmp_path):
    """Every test gets its own storage folder and cache (the default backend: local files)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }
    settings.CADENCE_PLUGIN_CACHE_DIR = str(tmp_path / "cache")
    return tmp_path


def stored_files(root) -> list[str]:
    media = root / "media"
    return (
        sorted(str(p.relative_to(media)) for p in media.rglob("*") if p.is_file())
        if media.exists()
        else []
    )


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def _answer(self):
        if self.path.startswith("/redirect"):
            self.server.requests.append(
                {"method": self.command, "path": self.path, "headers": {}, "body": ""}
            )
            self.send_response(307)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        self.server.requests.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        payload = json.dumps({"path": self.path, "ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer


@pytest.fixture(scope="session")
def _http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def http_server(_http_server, settings):
    """A local HTTP server; only its exact host is allowed by the egress policy."""
    _http_server.requests.clear()
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = [*settings.CADENCE_EGRESS_ALLOWED_HOSTS, "127.0.0.1"]
    _http_server.base_url = f"http://127.0.0.1:{_http_server.server_address[1]}"
    return _http_server
