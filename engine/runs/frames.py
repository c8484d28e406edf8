"""The run socket's frames as JSON, built from a run in flight (engine/runs/recorder.py's steps and
lines) for the publisher (engine/runs/live.py).

A step's frame is export.step_fields plus `type` and `cursor`, written from templates rather
than through a dict and json.dumps: a frame per step is most of what publishing costs a run
(benchmarks/runs.py). test_live.py compares them with step_fields' own output.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from engine.runs.recorder import INLINE_BYTES
from engine.runs.recorder import _truncated as truncated_value


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def step_frame_text(row: Any, started: bool) -> tuple[int, str]:
    """(cursor, JSON) of the run socket's frame for a step: as it started (no data yet),
    or as it ended, each large field truncated as the stored row is (GET …/steps/ items,
    plus type and cursor). One JSON encoding in the usual case: the data's own is needed
    only when the frame is long enough that the data might be over INLINE_BYTES."""
    if started:
        # A template: the start frame is most of what a step's publishing costs otherwise.
        return row.start_cursor, _STARTED % (
            row.start_cursor,
            row.seq,
            "null" if row.parent_seq is None else row.parent_seq,
            _string(row.name),
            _string(row.kind),
            iso(row.started_at),
        )
    data = row.data
    text = _ended_text(row, data, False)
    if row.payload or len(text) > INLINE_BYTES:
        # _offload (at the end) sets `payload` before it truncates `data`: either way the
        # frame says what the stored row will say.
        whole = row.json or json.dumps(data, separators=(",", ":"), default=str)
        row.json = whole
        if row.payload or len(whole) > INLINE_BYTES:
            truncated = {key: truncated_value(value) for key, value in data.items()}
            text = _ended_text(row, truncated, True)
    return row.end_cursor, text


def _ended_text(row: Any, data: dict[str, Any], truncated: bool) -> str:
    """export.step_fields as JSON, by a template: a frame per step is the publishing's main
    cost (benchmarks/runs.py); the tests compare it with step_fields' own output."""
    detail = (
        {k: v for k, v in data.items() if k not in _DATA_KEYS}
        if not _DATA_KEYS.issuperset(data)
        else None
    )
    error = (
        _dumps({"type": row.error_type, "message": row.error, "stack": row.stack})
        if row.error or row.error_type
        else "null"
    )
    return _ENDED % (
        row.end_cursor,
        row.seq,
        "null" if row.parent_seq is None else row.parent_seq,
        _string(row.name),
        _string(row.kind),
        _string(row.outcome),
        iso(row.started_at),
        iso(row.at),
        _number(row.duration_ms),
        _value(data.get("inputs")),
        _value(data.get("outputs")),
        _dumps(detail) if detail else "{}",
        _value(data.get("llm")),
        error,
        _number(row.cpu_ms),
        _number(row.memory_kb),
        "true" if truncated else "false",
    )


# The frame of a step as it starts: export.step_fields with no data, as JSON (the tests compare
# it with the replayed frames, which step_fields builds).
_STARTED = (
    '{"type": "step", "cursor": %d, "seq": %d, "parent": %s, "name": %s, "kind": %s, '
    '"status": "running", "started_at": "%s", "finished_at": null, "duration_ms": null, '
    '"inputs": null, "outputs": null, "detail": {}, "llm": null, "error": null, '
    '"resources": {"cpu_ms": null, "memory_kb": null}, "truncated": false}'
)


_ENDED = (
    '{"type": "step", "cursor": %d, "seq": %d, "parent": %s, "name": %s, "kind": %s, '
    '"status": %s, "started_at": "%s", "finished_at": "%s", "duration_ms": %s, '
    '"inputs": %s, "outputs": %s, "detail": %s, "llm": %s, "error": %s, '
    '"resources": {"cpu_ms": %s, "memory_kb": %s}, "truncated": %s}'
)
_string = json.encoder.encode_basestring_ascii  # what json.dumps does to a str, in C
_dumps = json.JSONEncoder(default=str).encode
_DATA_KEYS = frozenset({"inputs", "outputs", "llm"})
_INFINITIES = (float("inf"), float("-inf"))


def _number(value: float | int | None) -> str:
    if value is None:
        return "null"
    # What json writes for a finite number (NaN and infinities are json's own words).
    return repr(value) if value == value and value not in _INFINITIES else _dumps(value)


def _value(value: Any) -> str:
    return "null" if value is None else _dumps(value)


def line_frame_text(line: Any) -> tuple[int, str]:
    return line.cursor, json.dumps(
        {
            "type": "log",
            "cursor": line.cursor,
            "step": line.step,
            "level": line.level,
            "message": line.message,
            "at": iso(line.at),
            "logger": line.logger,
            "worker": line.worker,
        }
    )
