from __future__ import annotations

import asyncio
import io
import json
import sys
from dataclasses import dataclass

import pytest

from engine import Cadence, Score
from engine.reporters import (
    ConsoleReporter,
    JsonReporter,
    MissingDependencyError,
    OpenTelemetryReporter,
    PrometheusReporter,
)


@dataclass
class S(Score):
    value: int = 0


async def inc(score: S) -> None:
    score.value += 1


def test_console_reporter_writes_one_line_per_measure_and_total():
    stream = io.StringIO()
    asyncio.run(Cadence("c", S()).with_reporter(ConsoleReporter(stream)).then("a", inc).run())
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["[cadence] a", "[cadence] c TOTAL"]
    assert all(line.endswith("ms") for line in lines)


def test_json_reporter_writes_json_lines_with_the_score():
    stream = io.StringIO()
    reporter = JsonReporter(stream, include_score=True)
    asyncio.run(Cadence("c", S()).with_reporter(reporter.report).then("a", inc).run())
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["note"], r["score"]) for r in records] == [("a", {"value": 1}), ("c", {"value": 1})]


def test_prometheus_reporter_records_histogram_and_counter():
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    reporter = PrometheusReporter(prefix="myapp", registry=registry)
    cadence = Cadence("tracked", S()).with_reporter(reporter.report).then("note1", inc)
    asyncio.run(cadence.run())
    asyncio.run(cadence.run(S()))
    assert registry.get_sample_value("myapp_note_total", {"note": "note1"}) == 2.0
    assert registry.get_sample_value("myapp_note_duration_seconds_count", {"note": "note1"}) == 2.0
    assert registry.get_sample_value("myapp_cadence_total", {"cadence": "tracked"}) == 2.0


def test_opentelemetry_reporter_emits_back_dated_spans():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reporter = OpenTelemetryReporter(service_name="my-service", tracer_provider=provider)
    asyncio.run(Cadence("traced", S()).with_reporter(reporter.report).then("note1", inc).run())
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["note1", "traced"]
    assert spans[0].attributes["service.name"] == "my-service"
    assert spans[0].end_time >= spans[0].start_time
    assert OpenTelemetryReporter(service_name="default-provider").service_name == "default-provider"


@pytest.mark.parametrize(
    ("blocked", "factory", "hint"),
    [
        ("prometheus_client", lambda: PrometheusReporter(), "pip install prometheus-client"),
        ("opentelemetry", lambda: OpenTelemetryReporter(), "pip install opentelemetry-api"),
    ],
)
def test_missing_packages_raise_an_import_error_with_the_install_command(
    monkeypatch, blocked, factory, hint
):
    monkeypatch.setitem(sys.modules, blocked, None)  # makes `import <blocked>` fail
    with pytest.raises(ImportError) as info:
        factory()
    assert isinstance(info.value, MissingDependencyError)
    assert hint in str(info.value)
