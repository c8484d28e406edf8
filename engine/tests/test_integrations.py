from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine import Cadence, CircuitOpenError, Score

REPO = Path(__file__).resolve().parents[2]


@dataclass
class OrderScore(Score):
    order_id: str = ""
    status: str = "pending"


async def pay(score: OrderScore) -> None:
    if score.order_id == "down":
        raise CircuitOpenError("payments")
    score.status = "paid"


checkout_cadence = Cadence("checkout", OrderScore()).then("pay", pay)


def test_fastapi_router_serves_a_cadence():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from engine.integrations.fastapi import CadenceRouter

    app = FastAPI()
    router = CadenceRouter()

    @router.cadence("/orders/{order_id}", checkout_cadence)
    async def create_order(order_id: str):
        return OrderScore(order_id=order_id)

    app.include_router(router)
    client = TestClient(app)
    response = client.post("/orders/ORD-123")
    assert (response.status_code, response.json()) == (
        200,
        {"order_id": "ORD-123", "status": "paid"},
    )
    failed = client.post("/orders/down")
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "note_error"
    assert client.get("/orders/ORD-1").status_code == 405


def test_flask_blueprint_serves_a_cadence():
    from flask import Flask

    from engine.integrations.flask import CadenceBlueprint

    app = Flask(__name__)
    bp = CadenceBlueprint("orders", __name__)

    @bp.cadence_route("/orders/<order_id>", checkout_cadence)
    def create_order(order_id):
        return OrderScore(order_id=order_id)

    app.register_blueprint(bp)
    client = app.test_client()
    response = client.post("/orders/ORD-123")
    assert (response.status_code, response.get_json()) == (
        200,
        {"order_id": "ORD-123", "status": "paid"},
    )
    failed = client.post("/orders/down")
    assert (failed.status_code, failed.get_json()["error"]["code"]) == (503, "note_error")


DJANGO_SCRIPT = textwrap.dedent(
    """
    import json
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=True,
        SECRET_KEY="test",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"],
        DATABASES={},
        REST_FRAMEWORK={"DEFAULT_AUTHENTICATION_CLASSES": [], "DEFAULT_PERMISSION_CLASSES": [],
                        "UNAUTHENTICATED_USER": None},
    )
    django.setup()

    import asyncio
    from django.test import RequestFactory
    from rest_framework.test import APIRequestFactory
    from engine.integrations.django import cadence_api_view, cadence_view
    from engine.tests.test_integrations import OrderScore, checkout_cadence

    view = cadence_view(checkout_cadence, lambda request, order_id: OrderScore(order_id=order_id))
    ok = asyncio.run(view(RequestFactory().post("/orders/A/"), order_id="A"))
    down = asyncio.run(view(RequestFactory().post("/orders/down/"), order_id="down"))
    wrong = asyncio.run(view(RequestFactory().get("/orders/A/"), order_id="A"))

    Api = cadence_api_view(checkout_cadence, lambda request, order_id: OrderScore(order_id=order_id))
    drf = Api.as_view()(APIRequestFactory().post("/orders/B/"), order_id="B")
    drf.render()
    print(json.dumps({
        "ok": [ok.status_code, json.loads(ok.content)],
        "down": [down.status_code, json.loads(down.content)["error"]["code"]],
        "wrong": wrong.status_code,
        "drf": [drf.status_code, json.loads(drf.content)],
    }))
    """
)


def test_django_and_drf_views_serve_a_cadence_in_a_configured_subprocess():
    proc = subprocess.run(
        [sys.executable, "-c", DJANGO_SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "ok": [200, {"order_id": "A", "status": "paid"}],
        "down": [503, "note_error"],
        "wrong": 405,
        "drf": [200, {"order_id": "B", "status": "paid"}],
    }


def test_importing_the_engine_imports_no_django():
    script = textwrap.dedent(
        """
        import sys
        import engine, engine.flow, engine.checkpoint, engine.events, engine.reporters, engine.hooks
        import engine.score, engine.resilience, engine.diagram, engine.merge, engine.errors, engine.cli
        import engine.parallel, engine.runner, engine.measures, engine.context, engine.note
        import engine.integrations, engine.integrations.fastapi, engine.integrations.flask
        leaked = sorted(m for m in sys.modules if m == "django" or m.startswith("django.") or m.startswith("rest_framework"))
        assert not leaked, leaked
        print("clean")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "clean"), proc.stderr


# The Django side of runs and the project's own files in the `engine` package, named here; every
# other Python file under engine/ is the library and is checked, so a new library module is
# covered without anyone listing it.
DJANGO_SIDE = [
    "apps.py",
    "models.py",
    "admin.py",
    "migrations",
    "runs",
    "durable",  # queued runs (a Django app of its own)
    "trust",  # snapshots, proofs and the transparency log (a Django app of its own)
    "alerts",  # alert rules and their history (a Django app of its own)
    "retention",  # purging runs past their plan's retention (a Django app of its own)
    "tests",
    "integrations/django.py",  # the library's optional Django integration imports Django by design
]


def _library_files() -> list[Path]:
    root = REPO / "engine"
    excluded = [root / entry for entry in DJANGO_SIDE]
    # every listed entry exists (a renamed module must be renamed here too)
    assert [p for p in excluded if not p.exists()] == []
    return sorted(
        path
        for path in root.rglob("*.py")
        if not any(path == ex or ex in path.parents for ex in excluded)
    )


def test_no_library_module_mentions_a_django_import():
    paths = _library_files()
    assert REPO / "engine" / "flow" / "validate.py" in paths
    assert REPO / "engine" / "recording.py" in paths
    assert REPO / "engine" / "runs" / "pipeline.py" not in paths
    offenders = []
    for path in paths:
        rel = path.relative_to(REPO).as_posix()
        text = path.read_text()
        if "import django" in text or "from django" in text or "rest_framework" in text:
            offenders.append(rel)
    assert offenders == []


def test_importing_every_library_module_imports_no_django():
    root = REPO / "engine"
    modules = []
    for path in _library_files():
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] != "__main__":  # runs the command line on import
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    script = (
        "import importlib, sys\n"
        f"for name in {sorted(modules)!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as exc:\n"
        "        if 'needs the' not in str(exc):\n"  # an optional extra that is not installed
        "            raise\n"
        "leaked = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.') "
        "or m.startswith('rest_framework'))\n"
        "assert not leaked, leaked\n"
        "print('clean')\n"
    )
    assert root.exists()
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "clean"), proc.stderr


@pytest.mark.parametrize("module", ["engine.integrations.fastapi", "engine.integrations.flask"])
def test_integrations_say_which_package_is_missing(module):
    package = module.rsplit(".", 1)[1]
    script = f"import sys; sys.modules[{package!r}] = None\ntry:\n    import {module}\nexcept ImportError as e:\n    print(e)"
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert (
        proc.stdout.strip()
        == f"engine.integrations.{package} needs the '{package}' package: pip install {package}"
    )
