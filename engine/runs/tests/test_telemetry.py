"""Metrics and traces of runs, from real server processes.

Two uvicorn processes share one PROMETHEUS_MULTIPROC_DIR: runs served by either are counted in
/metrics whichever answers, parsed with prometheus_client's own parser. One of them exports
traces over OTLP/HTTP to a receiver this test runs (the protobuf request decoded with
opentelemetry-proto), and the spans are checked against the run's recorded steps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django_tenants.utils import schema_context
from prometheus_client.parser import text_string_to_metric_families

from cadence_site.testing import spawn_live_server, test_database_url, wait_live_servers

TOKEN = "metrics-token-for-tests-7f3a"


class OtlpReceiver:
    """A tiny OTLP/HTTP trace receiver: POST /v1/traces with an ExportTraceServiceRequest."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.spans: list = []
        self.requests = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                with lock:
                    receiver.requests += 1
                    for resource_spans in request.resource_spans:
                        resource = _attributes(resource_spans.resource.attributes)
                        for scope_spans in resource_spans.scope_spans:
                            for span in scope_spans.spans:
                                receiver.spans.append((resource, span))
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def trace(self, trace_id: str, count: int, timeout: float = 15.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [s for s in self.spans if s[1].trace_id.hex() == trace_id]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        return [s for s in self.spans if s[1].trace_id.hex() == trace_id]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _attributes(attributes) -> dict:
    out = {}
    for kv in attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
        else:
            out[kv.key] = getattr(value, kind) if kind else None
    return out


@pytest.fixture(scope="module")
def servers(django_db_setup, django_db_blocker, tmp_path_factory):
    """Server a (exports traces) and server b (its /metrics needs the token), one metrics dir."""
    directory = tmp_path_factory.mktemp("prometheus-multiproc")
    receiver = OtlpReceiver()
    with django_db_blocker.unblock():
        database = test_database_url()
        a, b = wait_live_servers(
            [
                spawn_live_server(
                    database,
                    PROMETHEUS_MULTIPROC_DIR=str(directory),
                    OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                    OTEL_BSP_SCHEDULE_DELAY="50",
                    OTEL_SERVICE_NAME="cadence-test",
                ),
                spawn_live_server(
                    database, PROMETHEUS_MULTIPROC_DIR=str(directory), CADENCE_METRICS_TOKEN=TOKEN
                ),
            ]
        )
    try:
        yield {"a": a, "b": b, "receiver": receiver, "dir": directory}
    finally:
        a.stop()
        b.stop()
        receiver.stop()


def _invoke(server, key: str, message: str) -> dict:
    request = urllib.request.Request(
        f"{server.url}/api/v1/orgs/alpha/orchestrators/chatbot/invoke/",
        data=json.dumps({"messages": [{"role": "user", "content": message}]}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _scrape(server, token: str | None = None) -> dict[tuple, float]:
    """Every sample as {(name, sorted labels): value}."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{server.url}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _total(samples: dict, name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


def _recorded(run_ids: list[str]) -> dict:
    """What the database holds for these runs: steps per kind, tokens."""
    from engine.models import Run, RunEvent

    with schema_context("org_alpha"):
        steps = list(RunEvent.objects.filter(run_id__in=run_ids).values_list("kind", "outcome"))
        usage = [run.usage for run in Run.objects.filter(pk__in=run_ids)]
    return {
        "steps": steps,
        "input": sum(u.get("prompt_tokens", 0) for u in usage),
        "output": sum(u.get("completion_tokens", 0) for u in usage),
    }


def test_metrics_are_summed_across_two_server_processes(world, chat_orchestrator, servers):
    a, b = servers["a"], servers["b"]
    key = world.alpha.keys["member"]
    before = _scrape(a)
    org = {"org": "alpha", "orchestrator": "chatbot"}

    runs = [
        _invoke(a, key, "hello from a"),
        _invoke(a, key, '/tool calculator {"expression": "6*7"}'),
        _invoke(b, key, "hello from b"),
    ]

    recorded = _recorded([run["run"] for run in runs])
    kinds = [kind for kind, _ in recorded["steps"]]
    assert kinds.count("tool_call") == 1 and kinds.count("llm_call") == 4
    for server, token in ((a, None), (b, TOKEN)):
        after = _scrape(server, token)

        def delta(name, after=after, **labels):
            return _total(after, name, **labels) - _total(before, name, **labels)

        assert delta("cadence_runs_total", **org, trigger="invoke", status="succeeded") == 3
        assert delta("cadence_run_duration_seconds_count", **org) == 3
        assert _total(after, "cadence_runs_in_progress", **org) == 0
        for kind in set(kinds):
            assert delta("cadence_step_duration_seconds_count", **org, kind=kind) == kinds.count(
                kind
            ), kind
        assert delta("cadence_tool_calls_total", **org, status="completed") == 1
        assert delta("cadence_llm_tokens_total", **org, direction="input") == recorded["input"]
        assert delta("cadence_llm_tokens_total", **org, direction="output") == recorded["output"]
        assert recorded["input"] > 0 and recorded["output"] > 0


def _names(server, token) -> set[str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{server.url}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return {f.name for f in text_string_to_metric_families(response.read().decode())}


def test_metrics_token_is_required_when_set(servers):
    b = servers["b"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        request = urllib.request.Request(f"{b.url}/metrics", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
        assert json.loads(refused.value.read())["error"]["code"] == "metrics_unauthorized"
    assert "cadence_runs" in _names(b, TOKEN)


def test_a_run_is_exported_as_a_genai_trace(world, chat_orchestrator, servers):
    from engine.models import RunEvent

    a, receiver = servers["a"], servers["receiver"]
    run = _invoke(a, world.alpha.keys["member"], '/tool calculator {"expression": "6*7"}')
    run_id = run["run"]
    with schema_context("org_alpha"):
        steps = list(RunEvent.objects.filter(run_id=run_id).order_by("seq"))

    trace_id = run_id.replace("-", "")
    spans = receiver.trace(trace_id, len(steps) + 1)

    assert len(spans) == len(steps) + 1
    assert {resource["service.name"] for resource, _ in spans} == {"cadence-test"}
    by_id = {span.span_id: span for _, span in spans}
    (root,) = [span for _, span in spans if not span.parent_span_id]
    root_attributes = _attributes(root.attributes)
    assert root.name == "invoke_agent chatbot"
    assert root_attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root_attributes["gen_ai.agent.name"] == "chatbot"
    assert root_attributes["cadence.run.id"] == run_id
    assert root_attributes["gen_ai.usage.input_tokens"] == run["usage"]["prompt_tokens"]
    span_of = {}
    for _, span in spans:
        attributes = _attributes(span.attributes)
        if "cadence.step.seq" in attributes:
            span_of[attributes["cadence.step.seq"]] = (span, attributes)
    assert sorted(span_of) == [step.seq for step in steps]
    for step in steps:
        span, attributes = span_of[step.seq]
        parent = by_id[span.parent_span_id]
        expected_parent = span_of[step.parent_seq][0] if step.parent_seq else root
        assert parent.span_id == expected_parent.span_id, step.name
        assert attributes["cadence.step.kind"] == step.kind
        assert span.start_time_unix_nano >= root.start_time_unix_nano
        assert span.end_time_unix_nano - span.start_time_unix_nano == pytest.approx(
            step.duration_ms * 1e6, abs=2_000
        )
        if step.kind == "llm_call":
            llm = step.data["llm"]
            assert span.name == f"chat {llm['model']}"
            assert span.kind == 3  # CLIENT
            assert attributes["gen_ai.operation.name"] == "chat"
            assert attributes["gen_ai.request.model"] == "cadence-offline"
            assert attributes["gen_ai.provider.name"] == "offline"
            assert attributes["gen_ai.system"] == "offline"
            assert attributes["gen_ai.usage.input_tokens"] == llm["tokens_in"]
            assert attributes["gen_ai.usage.output_tokens"] == llm["tokens_out"]
        if step.kind == "tool_call":
            assert span.name == "execute_tool calculator"
            assert attributes["gen_ai.tool.name"] == "calculator"
    # Content stays out of traces: not the message, not the tool's arguments or result.
    dumped = str([span for _, span in spans])
    assert "6*7" not in dumped and "You said" not in dumped


def test_tracing_off_imports_nothing_of_opentelemetry():
    """Without OTEL_EXPORTER_OTLP_ENDPOINT a run's end never loads the SDK."""
    code = """
import os, sys, types
os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
os.environ.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
from engine.runs import telemetry
recorder = types.SimpleNamespace(
    fields={"orchestrator_slug": "bot", "orchestrator_id": None, "conversation_id": None},
    events=[], duration_ms=1.0, started=0.0, run_id="00000000-0000-0000-0000-000000000001",
)
outcome = types.SimpleNamespace(status="succeeded", error=None, usage={}, run_id="r")
pair = telemetry.run_started(org="o", orchestrator="bot")
telemetry.run_ended(org="o", trigger="rest", recorder=recorder, outcome=outcome, pair=pair)
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["DJANGO_SETTINGS_MODULE"] = "cadence_site.settings"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_a_stopped_server_leaves_the_live_gauge_and_keeps_its_counts(
    world, chat_orchestrator, servers
):
    """Runs last in this module: it stops server b (the fixture's stop is then a no-op)."""
    a, b, directory = servers["a"], servers["b"], servers["dir"]
    _invoke(b, world.alpha.keys["member"], "one more from b")
    before = _scrape(a)
    gauge = directory / f"gauge_livesum_{b.process.pid}.db"
    assert gauge.exists()

    b.stop()

    assert not gauge.exists()  # the lifespan's shutdown marked the process dead
    after = _scrape(a)
    labels = {"org": "alpha", "orchestrator": "chatbot", "status": "succeeded"}
    assert _total(after, "cadence_runs_total", **labels) == _total(
        before, "cadence_runs_total", **labels
    )
    assert _total(after, "cadence_runs_in_progress", org="alpha") == 0
