"""/metrics: who may read it, the label cap, the multiprocess directory's upkeep, and the
counters that existed before run metrics (the limiter's) summed across processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client, override_settings
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from cadence_site.metrics import OTHER, LabelCap, clean, forget_dead_processes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def client(db):
    return Client()


def test_loopback_reads_metrics_without_a_token(client):
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")

    assert response.status_code == 200
    names = {f.name for f in text_string_to_metric_families(response.content.decode())}
    assert {"cadence_runs", "cadence_step_duration_seconds", "cadence_llm_tokens"} <= names


@pytest.mark.parametrize(
    "meta",
    [
        {"REMOTE_ADDR": "10.1.2.3"},
        {"REMOTE_ADDR": "203.0.113.9"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"},
        {"REMOTE_ADDR": "::1", "HTTP_FORWARDED": "for=203.0.113.9"},
        {"REMOTE_ADDR": ""},
    ],
)
def test_without_a_token_only_direct_loopback_requests_are_served(client, meta):
    response = client.get("/metrics", **meta)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "metrics_forbidden"
    assert "CADENCE_METRICS_TOKEN" in response.json()["error"]["message"]


@override_settings(CADENCE_METRICS_TOKEN="s3cret-metrics-token")
def test_with_a_token_it_is_required_from_everywhere(client):
    for meta in (
        {"REMOTE_ADDR": "127.0.0.1"},
        {"REMOTE_ADDR": "203.0.113.9", "HTTP_AUTHORIZATION": "Bearer wrong"},
        {"REMOTE_ADDR": "203.0.113.9", "HTTP_AUTHORIZATION": "Basic s3cret-metrics-token"},
    ):
        response = client.get("/metrics", **meta)
        assert response.status_code == 401, meta
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert "s3cret" not in response.content.decode()

    response = client.get(
        "/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer s3cret-metrics-token"
    )
    assert response.status_code == 200


def test_label_cap_reports_values_past_the_limit_as_other():
    cap = LabelCap(limit=3)

    assert [cap(v) for v in ("a", "b", "c", "d", "a", "e", "")] == [
        "a",
        "b",
        "c",
        OTHER,
        "a",
        OTHER,
        OTHER,  # "" is "none", a fourth value
    ]


def test_run_labels_cap_orchestrators_per_process(monkeypatch):
    from engine.runs import metrics

    monkeypatch.setattr(metrics, "_orgs", LabelCap(limit=2))
    monkeypatch.setattr(metrics, "_orchestrators", LabelCap(limit=3))

    got = [
        metrics.labels("alpha", "a1"),
        metrics.labels("alpha", "a2"),
        metrics.labels("bravo", "a1"),  # the same slug in another organization counts again
        metrics.labels("bravo", "b2"),
        metrics.labels("alpha", "a1"),
        metrics.labels("charlie", "c1"),
    ]

    assert got == [
        ("alpha", "a1"),
        ("alpha", "a2"),
        ("bravo", "a1"),
        ("bravo", OTHER),
        ("alpha", "a1"),
        (OTHER, OTHER),
    ]


def test_run_finished_counts_failures_by_code_and_steps_by_kind():
    import types

    from engine.runs import metrics

    registry_values = {}

    def value(metric, *labels):
        return metric.labels(*labels)._value.get()

    labels = metrics.run_started(org="alpha", orchestrator="unit-bot")
    registry_values["in_progress"] = value(metrics.RUNS_IN_PROGRESS, *labels)
    step = types.SimpleNamespace
    steps = [
        step(kind="llm_call", outcome="completed", duration_ms=20.0),
        step(kind="tool_call", outcome="failed", duration_ms=5.0),
        step(kind="weird-kind", outcome="weird", duration_ms=None),
    ]
    before_errors = value(metrics.ERRORS, *labels, "llm_timeout")
    before_tools = value(metrics.TOOL_CALLS, *labels, "failed")

    metrics.run_finished(
        pair=labels,
        recorded=True,
        org="alpha",
        orchestrator="unit-bot",
        trigger="rest",
        status="failed",
        duration_s=0.5,
        usage={"prompt_tokens": 7, "completion_tokens": True},
        error_code="llm_timeout",
        steps=steps,
    )

    assert value(metrics.RUNS_IN_PROGRESS, *labels) == registry_values["in_progress"] - 1
    assert value(metrics.ERRORS, *labels, "llm_timeout") == before_errors + 1
    assert value(metrics.TOOL_CALLS, *labels, "failed") == before_tools + 1
    assert value(metrics.TOKENS, *labels, "input") >= 7
    # A turn refused before any run was recorded: an error, and no run.
    runs_before = value(metrics.RUNS, *labels, "rest", "failed")
    metrics.run_finished(
        pair=None,
        recorded=False,
        org="alpha",
        orchestrator="unit-bot",
        trigger="rest",
        status="failed",
        duration_s=None,
        usage={},
        error_code="llm_timeout",
        steps=[],
    )
    assert value(metrics.ERRORS, *labels, "llm_timeout") == before_errors + 2
    assert value(metrics.RUNS, *labels, "rest", "failed") == runs_before


def _collect(directory: Path) -> dict:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
    }


def test_existing_counters_are_summed_across_processes(tmp_path):
    """The limiter's DEGRADED counter (tenants/ratelimit.py), incremented in two processes."""
    code = (
        "import django; django.setup()\n"
        "from tenants.ratelimit import DEGRADED\n"
        "DEGRADED.labels('allowed').inc(2)\n"
    )
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    env["DJANGO_SETTINGS_MODULE"] = "cadence_site.settings"
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr

    samples = _collect(tmp_path)

    assert samples[("cadence_limits_degraded_total", (("outcome", "allowed"),))] == 4


def test_dead_processes_leave_live_gauges_but_keep_counters(tmp_path):
    code = (
        "from prometheus_client import Counter, Gauge\n"
        "Gauge('g', 'g', multiprocess_mode='livesum').inc(3)\n"
        "Counter('c', 'c').inc(5)\n"
    )
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _collect(tmp_path)[("g", ())] == 3
    (unrelated := tmp_path / "notes.txt").write_text("kept")

    assert forget_dead_processes(tmp_path) != []

    samples = _collect(tmp_path)
    assert ("g", ()) not in samples or samples[("g", ())] == 0
    assert samples[("c_total", ())] == 5

    clean(tmp_path)
    assert _collect(tmp_path) == {}
    assert unrelated.read_text() == "kept"  # only metric files are removed


def test_clean_command_needs_a_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    run = [sys.executable, "-m", "cadence_site.metrics"]
    refused = subprocess.run([*run, "clean"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert refused.returncode == 2
    (tmp_path / "counter_1.db").write_bytes(b"x")
    done = subprocess.run(
        [*run, "clean", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and list(tmp_path.iterdir()) == []


def test_a_celery_worker_process_marks_itself_dead_when_it_stops(tmp_path):
    """cadence_site/celery.py: worker_process_shutdown takes the child's live gauges out."""
    code = (
        "import os, django\n"
        "django.setup()\n"
        "from celery.signals import worker_process_shutdown\n"
        "import cadence_site.celery\n"
        "from engine.runs import metrics\n"
        "metrics.run_started(org='alpha', orchestrator='bot')\n"
        "metrics.RUNS.labels('alpha', 'bot', 'queue', 'succeeded').inc()\n"
        "assert os.path.exists(os.path.join(os.environ['PROMETHEUS_MULTIPROC_DIR'],"
        " f'gauge_livesum_{os.getpid()}.db'))\n"
        "worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)\n"
    )
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    env["DJANGO_SETTINGS_MODULE"] = "cadence_site.settings"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr

    samples = _collect(tmp_path)
    assert list(tmp_path.glob("gauge_livesum_*.db")) == []
    assert not any(
        name == "cadence_runs_in_progress" and value for (name, _), value in samples.items()
    )
    key = (
        "cadence_runs_total",
        (("orchestrator", "bot"), ("org", "alpha"), ("status", "succeeded"), ("trigger", "queue")),
    )
    assert samples[key] == 1


def test_make_run_gives_every_process_one_emptied_directory(tmp_path, monkeypatch):
    from cadence_site.launcher import Launcher

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("CADENCE_VAR_DIR", str(tmp_path))
    stale = tmp_path / "prometheus-multiproc" / "counter_4242.db"
    stale.parent.mkdir()
    stale.write_bytes(b"left by an earlier run")

    env = Launcher().metrics_directory()

    assert env == {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus-multiproc")}
    assert not stale.exists()

    # A directory the environment names is used (and emptied of metric files) instead.
    chosen = tmp_path / "chosen"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(chosen))
    assert Launcher().metrics_directory() == {"PROMETHEUS_MULTIPROC_DIR": str(chosen)}
    assert chosen.is_dir()
