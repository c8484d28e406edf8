"""Replay (time travel): re-run one step of a run, or the run from a step, as a run of its own.

`{"step": N}` re-runs step N alone on the score fields it found (its recorded `inputs`), without
the steps before it; `{"from_step": N}` re-runs the flow from top-level step N on the state
recorded before it. Either runs under the run's pinned definition snapshot (never the
orchestrator's current definition), through the turn pipeline (trigger `replay`, linked by
`replay_of` / `replay_step`, proven and budgeted like any run). Model and tool calls answer from
the original run's recorded responses unless `live` (engine/trust/replay.py has the recorded
provider and tools), so a deterministic step gives the same outputs byte for byte.

What the notes take from outside the score comes from the run's record: the user's message
(`input.message`) and the request's model parameters. A conversation's earlier messages are
recorded as a count only: a replayed `prepare_prompt` of a turn with history builds its prompt
without them, and its diff shows it.

The response compares the replayed step's outputs (the fields it changed) with the original's,
or, from a step, the fields the steps from N on changed in all: `{field: {before, after}}` for
every field whose value differs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from asgiref.sync import async_to_sync
from django.db import connection

from cadence_site.errors import ApplicationError
from engine.lineage import SCORE_KINDS
from engine.models import Run, RunEvent
from engine.runs.selectors import run_steps, step_payload


def _bad(message: str, field: str, code: str = "invalid_step") -> ApplicationError:
    return ApplicationError(message, code, {"field": field})


class _Records:
    """The original run's steps with their whole data, and the tree they form."""

    def __init__(self, run: Run) -> None:
        self.steps: list[RunEvent] = run_steps(run=run)
        self.by_seq = {s.seq: s for s in self.steps}
        self._data: dict[int, dict[str, Any]] = {}

    def data(self, step: RunEvent) -> dict[str, Any]:
        if step.seq not in self._data:
            whole = step_payload(step=step) if step.payload else step.data
            self._data[step.seq] = whole if isinstance(whole, dict) else {}
        return self._data[step.seq]

    def is_score(self, step: RunEvent) -> bool:
        return step.kind in SCORE_KINDS and isinstance(self.data(step).get("inputs"), dict)

    def siblings(self, step: RunEvent) -> list[RunEvent]:
        return [s for s in self.steps if s.parent_seq == step.parent_seq and self.is_score(s)]

    def path(self, step: RunEvent) -> list[RunEvent]:
        path = [step]
        while path[0].parent_seq is not None:
            path.insert(0, self.by_seq[path[0].parent_seq])
        return path

    def within(self, root: RunEvent) -> list[RunEvent]:
        """The step and every step under it, in order."""
        inside = {root.seq}
        for step in self.steps:
            if step.parent_seq in inside:
                inside.add(step.seq)
        return [s for s in self.steps if s.seq in inside]


def _locate(flow: Any, records: _Records, target: RunEvent) -> Any:
    """The measure (or a group's note) of the snapshot's flow that step `target` ran."""
    from engine.measures import ChildMeasure, SequenceMeasure, SplitMeasure, SyncMeasure

    place: Any = flow
    path = records.path(target)
    for depth, step in enumerate(path):
        position = [s.seq for s in records.siblings(step)].index(step.seq)
        found: Any = None
        if hasattr(place, "_measures"):  # a cadence: its measures ran in order
            found = place._measures[position] if position < len(place._measures) else None
        elif isinstance(place, SyncMeasure | SequenceMeasure):  # its notes started in order
            found = place.steps[position] if position < len(place.steps) else None
        elif isinstance(place, SplitMeasure):  # only the chosen branch ran: by name
            found = next(
                (n for n in (*place.if_true, *place.if_false) if n.name == step.name), None
            )
        if found is None or found.name != step.name:
            raise ApplicationError(
                f"Step {target.seq} has no counterpart in the run's definition.",
                "replay_unavailable",
            )
        if depth == len(path) - 1:
            return found
        place = found.cadence if isinstance(found, ChildMeasure) else found
    raise AssertionError("unreachable")  # pragma: no cover - the path ends at the target


def _part(flow: Any, records: _Records, target: RunEvent, from_here: bool) -> Any:
    """A cadence of the snapshot's flow to run: the target step alone, or the flow from it."""
    from engine import Cadence
    from engine.measures import Measure

    if from_here:
        position = [s.seq for s in records.siblings(target)].index(target.seq)
        part = Cadence(flow.name, None)
        part._measures = list(flow._measures[position:])
        part._error_handler, part._stop_on_error = flow._error_handler, flow._stop_on_error
        return part
    found = _locate(flow, records, target)
    if isinstance(found, Measure):
        return Cadence(f"replay {target.name}", None).add_measure(found)
    return Cadence(f"replay {target.name}", None).then(target.name, found)


class _ReplayRuntime:
    """The snapshot's native runtime, running a part of its flow on a recorded score."""

    def __init__(self, runtime: Any, part: Any, score: Any) -> None:
        from orchestrators.adapters.cadence import traced

        self.config = runtime.config
        self.runtime = runtime
        self.part = traced(part)
        self.score = score

    def stream(self, history: list[dict[str, Any]], message: str, context: Any):
        return self.runtime.stream(history, message, context, cadence=self.part, score=self.score)


def _score(inputs: dict[str, Any]) -> Any:
    from orchestrators.adapters.cadence import AgentScore

    names = {f.name for f in dataclasses.fields(AgentScore)}
    return AgentScore(**{k: v for k, v in inputs.items() if k in names})


def _runtime(run: Run, records: _Records, scope: list[RunEvent], live: bool, org_slug: str):
    from engine.durable.execution import snapshot_runtime_config
    from engine.trust.proofs import step_record
    from engine.trust.replay import RecordedProvider, _recorded_tools
    from orchestrators.adapters import adapter_for

    if run.snapshot_id is None or run.orchestrator_id is None:
        raise ApplicationError(
            "This run cannot be replayed: it is pinned to no definition snapshot.",
            "replay_unavailable",
        )
    config, instance = snapshot_runtime_config(
        connection.schema_name, org_slug, run, run.orchestrator_id
    )
    if config.framework != "cadence":
        raise ApplicationError(
            "Replay re-runs steps of the native framework only.", "replay_unavailable"
        )
    provider = None
    if not live:
        recorded = [step_record(s) for s in scope if s.kind in ("llm_call", "tool_call")]
        config = dataclasses.replace(config, tools=_recorded_tools(config, recorded))
        provider = RecordedProvider(
            [r for r in recorded if r["kind"] == "llm_call"],
            failure_code=run.error_code or "llm_error",
        )
    return adapter_for("cadence").build(config, provider=provider), instance


def _changes(records: list[tuple[RunEvent, dict[str, Any]]]) -> dict[str, Any]:
    """What the steps changed in all, later steps over earlier ones."""
    changed: dict[str, Any] = {}
    for _, data in records:
        changed.update(data.get("outputs") or {})
    return changed


def _diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {"before": before.get(name), "after": after.get(name)}
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }


def run_replay(
    *,
    run: Run,
    step: int | None = None,
    from_step: int | None = None,
    live: bool = False,
    org: Any,
    principal: Any,
) -> dict[str, Any]:
    """Replay `step` (or the run from `from_step`) of `run`, in the current tenant's schema,
    as a new run owned by `principal`; returns the response body."""
    from engine.runs.pipeline import TurnRequest, turn_run
    from orchestrators.pool import Acquired

    from_here = from_step is not None
    field = "from_step" if from_here else "step"
    seq = from_step if from_here else step
    records = _Records(run)
    target = records.by_seq.get(seq)
    if target is None:
        raise _bad(f"The run has no step {seq}.", field, "unknown_step")
    if not records.is_score(target):
        owner = target.parent_seq
        raise _bad(
            f"Step {seq} is a {target.kind} step: replay the step that made it"
            + (f" (step {owner})." if owner is not None else "."),
            field,
        )
    if from_here and target.parent_seq is not None:
        top = records.path(target)[0]
        raise _bad(
            f"from_step needs a step of the flow itself; step {seq} runs inside step {top.seq}.",
            field,
        )
    scope = [s for s in records.steps if s.seq >= seq] if from_here else records.within(target)
    runtime, instance = _runtime(run, records, scope, live, org.slug)
    inputs = records.data(target)["inputs"]
    replay_runtime = _ReplayRuntime(
        runtime, _part(runtime.flow, records, target, from_here), _score(inputs)
    )
    key = getattr(principal, "api_key", None)
    message = str((run.input or {}).get("message", ""))
    parameters = dict((run.input or {}).get("parameters") or {})
    recorded_input: dict[str, Any] = {"message": message, "history_messages": 0}
    if parameters:
        recorded_input["parameters"] = parameters
    recorded_input["replay"] = {"of": str(run.id), field: seq, "live": live}
    outcome = async_to_sync(turn_run)(
        TurnRequest(
            schema_name=connection.schema_name,
            org_slug=org.slug,
            ref=str(run.orchestrator_id),
            message=message,
            history=[],
            trigger=Run.Trigger.REPLAY,
            principal=str(principal)[:200],
            owner_user_id=None if key is not None else principal.pk,
            owner_api_key_id=str(key.pk) if key is not None else None,
            acquired=Acquired(
                replay_runtime,
                str(instance.id),
                instance.slug,
                run.config_hash,
                instance.version,
                run.snapshot_id or "",
            ),
            parameters=parameters,
            run_fields={"replay_of_id": run.id, "replay_step": seq, "input": recorded_input},
        )
    )
    replay = Run.objects.filter(pk=outcome.run_id).first()
    if replay is None:  # the pipeline logged why
        raise ApplicationError("The replay could not be recorded.", "replay_failed", status=500)
    replayed = _Records(replay)
    tops = [s for s in replayed.steps if s.parent_seq is None and replayed.is_score(s)]
    if from_here:
        original = [(s, records.data(s)) for s in records.siblings(target) if s.seq >= seq]
        before = _changes(original)
    else:
        before = records.data(target).get("outputs") or {}
        tops = tops[:1]
    after = _changes([(s, replayed.data(s)) for s in tops])
    return {
        "id": str(replay.id),
        "status": replay.status,
        "replay_of": str(run.id),
        field: seq,
        "live": live,
        "diff": _diff(before, after),
        "error": {"code": replay.error_code, "message": replay.error} if replay.error else None,
    }
