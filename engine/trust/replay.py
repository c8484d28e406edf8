"""Replay against the proof: re-execute a run from its snapshot and its recorded model and tool
responses, and check that every step reproduces the output hash its proof committed to.

Nothing is written: the replay's steps are recorded in memory only and compared with the proof,
step by step. A mismatch names the step, what the proof committed to and what the replay
produced, so a changed recorded response (or a definition that no longer behaves the same) is
found at the step where it shows.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from asgiref.sync import async_to_sync
from django.db import connection

from cadence_site.errors import ApplicationError
from engine.trust.canonical import canonical_json, jsonable
from engine.trust.proofs import run_records
from engine.trust.verify_bundle import chain, digest


class RecordedProvider:
    """Answers each model call with the next recorded response of the run; a call that failed
    fails again, with its recorded message and `failure_code`."""

    def __init__(self, calls: list[dict[str, Any]], failure_code: str = "llm_error") -> None:
        self.calls = list(calls)
        self.failure_code = failure_code

    async def stream(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        **options: Any,  # the request's model options: recorded answers need none
    ):
        from orchestrators.runtime import LLMDelta, LLMError, LLMResult, ToolCall, Usage

        if not self.calls:
            raise LLMError("the replay ran out of recorded model responses", "replay_exhausted")
        record = self.calls.pop(0)
        if record.get("outcome") == "failed":
            message, kind = record.get("error") or "", record.get("error_type") or ""
            if kind and message.startswith(f"{kind}: "):
                message = message[len(kind) + 2 :]
            raise LLMError(message or "the recorded model call failed", self.failure_code)
        out = record.get("outputs") or {}
        llm = (record.get("detail") or {}).get("llm") or {}
        if out.get("content"):
            yield LLMDelta(out["content"])
        yield LLMResult(
            out.get("content", ""),
            tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in out.get("tool_calls", [])),
            Usage(llm.get("tokens_in") or 0, llm.get("tokens_out") or 0),
            out.get("finish_reason", ""),
        )


def _recorded_tools(config: Any, records: list[dict[str, Any]]) -> tuple:
    answers: dict[tuple[str, bytes], list[Any]] = {}
    for record in records:
        if record["kind"] == "tool_call":
            arguments = ((record.get("inputs") or {}).get("arguments")) or {}
            key = (record["name"], canonical_json(arguments))
            answers.setdefault(key, []).append((record.get("outputs") or {}).get("result"))

    def recorded(tool):
        async def fn(arguments: dict[str, Any], context: Any) -> Any:
            queue = answers.get((tool.name, canonical_json(jsonable(arguments))))
            if not queue:
                raise RuntimeError(f"no recorded result of {tool.name} for these arguments")
            return queue.pop(0)

        return dataclasses.replace(tool, fn=fn)

    return tuple(recorded(tool) for tool in config.tools)


def replay_against_proof(*, run: Any, proof: Any) -> dict[str, Any]:
    from engine.durable.execution import snapshot_runtime_config
    from engine.runs.recorder import RunRecorder
    from engine.trust.log import organization_slug
    from orchestrators.adapters import adapter_for
    from orchestrators.runtime import FinalEvent, RunContext

    payload = json.loads(proof.canonical)
    records = run_records(run)
    schema_name = connection.schema_name
    org_slug = organization_slug(schema_name)
    if run.snapshot_id is None or run.orchestrator_id is None:
        raise ApplicationError("This run cannot be replayed: no snapshot.", "replay_unavailable")
    config, _ = snapshot_runtime_config(schema_name, org_slug, run, run.orchestrator_id)
    if config.framework != "cadence":
        raise ApplicationError(
            "Replay against the proof supports the native framework.", "replay_unavailable"
        )
    config = dataclasses.replace(config, tools=_recorded_tools(config, records))
    provider = RecordedProvider([r for r in records if r["kind"] == "llm_call"])
    runtime = adapter_for("cadence").build(config, provider=provider)
    recorder = RunRecorder(
        schema_name=schema_name,
        orchestrator_id=None,
        orchestrator_slug=run.orchestrator_slug,
        config_hash="",
        trigger=run.trigger,
    )
    message = (run.input or {}).get("message", "")

    async def execute() -> str:
        final = ""
        context = RunContext(org_slug=org_slug, run_id=f"replay-{run.id}")
        async for event in runtime.stream([], message, context):
            recorder.observe(event)
            if isinstance(event, FinalEvent):
                final = event.content
        return final

    try:
        output = async_to_sync(execute)()
    except Exception as exc:
        output, failure = None, f"{type(exc).__name__}: {exc}"
    else:
        failure = ""
    from engine.trust.proofs import step_record

    replayed, _ = chain([step_record(row) for row in recorder.events])
    mismatches = []
    committed = payload["steps"]
    for index in range(max(len(committed), len(replayed))):
        want = committed[index] if index < len(committed) else None
        got = replayed[index] if index < len(replayed) else None
        if (
            want is None
            or got is None
            or (want["kind"], want["name"], want["outputs_hash"])
            != (
                got["kind"],
                got["name"],
                got["outputs_hash"],
            )
        ):
            mismatches.append(
                {
                    "seq": (want or got)["seq"],
                    "name": (want or got)["name"],
                    "committed": want and want["outputs_hash"],
                    "replayed": got and got["outputs_hash"],
                }
            )
    output_matches = output is not None and digest(output) == payload["output_hash"]
    return {
        "run": str(run.id),
        "matches": not mismatches and output_matches and not failure,
        "steps": len(replayed),
        "mismatches": mismatches,
        "output_matches": output_matches,
        "error": failure,
    }
