"""The standalone verifier as a program (a copy of the script alone in a directory, run in an
isolated interpreter), `manage.py verify_run`, and anchoring tree heads to witnesses."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django_tenants.utils import schema_context

from engine.trust import log, signing, witness
from engine.trust.bundle import bundle_build
from engine.trust.tasks import publish_for

pytestmark = pytest.mark.django_db
SCRIPT = Path(__file__).resolve().parents[1] / "verify_bundle.py"


@pytest.fixture
def standalone(tmp_path):
    target = tmp_path / "verifier"
    target.mkdir()
    shutil.copy(SCRIPT, target / "verify_bundle.py")

    def run(bundle: dict, *extra: str) -> subprocess.CompletedProcess:
        path = tmp_path / "bundle.json"
        path.write_text(json.dumps(bundle))
        keys = [a for k in signing.keyring().verifiers for a in ("--key", str(k))]
        return subprocess.run(
            [sys.executable, "-I", str(target / "verify_bundle.py"), str(path), *keys, *extra],
            cwd=target,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def _bundle(run, proof, since=()):
    with schema_context("org_alpha"):
        return bundle_build(run=run, proof=proof, since=since)


def test_the_standalone_script_verifies_a_bundle_and_exits_0(proven_run, standalone):
    run, proof = proven_run()
    result = standalone(_bundle(run, proof))
    assert (result.returncode, result.stdout.splitlines()[-1]) == (0, "verified"), result.stderr


def test_the_standalone_script_reports_a_tampered_step_and_exits_1(proven_run, standalone):
    run, proof = proven_run()
    bundle = _bundle(run, proof)
    bundle["steps"][0]["outputs"] = {"x": "changed"}
    result = standalone(bundle)
    assert result.returncode == 1
    assert "FAIL step records: step 1 differs from the proof: outputs_hash, record_hash" in (
        result.stdout
    )


def test_the_standalone_script_refuses_to_run_without_a_trusted_key(tmp_path):
    result = subprocess.run(
        [sys.executable, "-I", str(SCRIPT), str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no trusted key" in result.stderr


def test_the_standalone_script_imports_nothing_from_cadence_or_django(tmp_path):
    shutil.copy(SCRIPT, tmp_path / "verify_bundle.py")
    probe = (
        "import sys, runpy; runpy.run_path('verify_bundle.py');"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'django', 'engine', 'cadence_site', 'tenants', 'orchestrators', 'chat', 'rest_framework'});"
        "print(bad)"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_verify_run_passes_then_fails_after_a_step_record_changes(proven_run, capsys):
    from engine.models import RunEvent

    run, _ = proven_run()
    call_command("verify_run", str(run.id))
    assert capsys.readouterr().out.splitlines()[-1] == "verified"
    with schema_context("org_alpha"):
        RunEvent.objects.filter(run=run, seq=1).update(name="renamed")
    with pytest.raises(CommandError, match="NOT VERIFIED"):
        call_command("verify_run", str(run.id), "--org", "alpha")
    assert "FAIL step records: step 1 differs from the proof: name, record_hash" in (
        capsys.readouterr().out
    )


def test_verify_run_of_an_unknown_run_fails(world):
    with pytest.raises(CommandError, match="not found"):
        call_command("verify_run", "00000000-0000-0000-0000-000000000000")
    with pytest.raises(CommandError, match="not a UUID"):
        call_command("verify_run", "nope")


def test_tree_heads_are_anchored_to_a_witness_file(proven_run, settings, tmp_path, standalone):
    witness_file = tmp_path / "witness.log"
    settings.CADENCE_WITNESS_FILE = str(witness_file)
    run, proof = proven_run()
    head = publish_for("org_alpha")
    with schema_context("org_alpha"):
        witness.tree_head_witness(tree_head=head)
        head.refresh_from_db()
    assert head.witnessed_at is not None
    assert witness_file.read_text() == head.note
    proven_run()
    later = publish_for("org_alpha")
    assert later.size == head.size + 1
    with schema_context("org_alpha"):
        witness.tree_head_witness(tree_head=later)
        bundle = bundle_build(run=run, proof=proof, since=[head.size])
    result = standalone(bundle, "--witnessed", str(witness_file))
    assert result.returncode == 0, result.stdout
    assert f"ok   witness (size {head.size})" in result.stdout
    call_command("verify_run", str(run.id), "--witnessed", str(witness_file))


class _Receiver(BaseHTTPRequestHandler):
    received: list = []
    status = 204

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver(settings):
    settings.CADENCE_EGRESS_ALLOW_PRIVATE = True
    _Receiver.received = []
    _Receiver.status = 204
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/witness", _Receiver
    server.shutdown()
    server.server_close()


def test_tree_heads_are_posted_to_a_witness_webhook_signed_with_hmac(
    proven_run, settings, receiver
):
    url, handler = receiver
    settings.CADENCE_WITNESS_URL = url
    settings.CADENCE_WITNESS_SECRET = "witness-secret"
    proven_run()
    head = publish_for("org_alpha")
    with schema_context("org_alpha"):
        witness.tree_head_witness(tree_head=head)
        origin = log.log_origin()
    ((headers, body),) = handler.received
    expected = hmac.new(b"witness-secret", body, hashlib.sha256).hexdigest()
    assert headers["X-Cadence-Signature"] == f"sha256={expected}"
    assert json.loads(body) == {
        "origin": origin,
        "size": head.size,
        "root_hash": json.loads(body)["root_hash"],
        "checkpoint": head.note,
    }


def test_a_failing_witness_is_an_error_to_retry_and_the_head_stays_unwitnessed(
    proven_run, settings, receiver
):
    url, handler = receiver
    handler.status = 503
    settings.CADENCE_WITNESS_URL = url
    proven_run()
    head = publish_for("org_alpha")
    with schema_context("org_alpha"):
        with pytest.raises(witness.WitnessError, match="503"):
            witness.tree_head_witness(tree_head=head)
        head.refresh_from_db()
    assert (head.witnessed_at, head.witness_error) == (None, "the witness answered 503")


def test_a_witness_on_a_private_address_is_refused_by_the_egress_policy(proven_run, settings):
    from cadence_site.outbound import EgressDenied

    settings.CADENCE_EGRESS_ALLOW_PRIVATE = False
    settings.CADENCE_WITNESS_URL = "http://169.254.169.254/latest"
    proven_run()
    head = publish_for("org_alpha")
    with schema_context("org_alpha"), pytest.raises(EgressDenied):
        witness.tree_head_witness(tree_head=head)
