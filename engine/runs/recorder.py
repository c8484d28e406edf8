"""Recording a run (the Django side of runs): one row when it starts, its events and outcome when it ends.

Events are kept in memory while the run streams and written in one batch at the end, so that
recording adds no database round trip per token or step; a crash mid-run leaves the run
`running` with its start time, which is what an operator needs to find it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone
from django_tenants.utils import schema_context

from engine.models import Run, RunEvent


def _jsonable(value: Any) -> Any:
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class RunRecorder:
    """Use from async code through `start`/`finish` (each enters the schema in its own call)."""

    def __init__(
        self,
        *,
        schema_name: str,
        orchestrator_id: str | None,
        orchestrator_slug: str,
        config_hash: str,
        trigger: str,
        principal: str = "",
        conversation_id: str | None = None,
        input: dict | None = None,
    ) -> None:
        self.schema_name = schema_name
        self.fields = {
            "orchestrator_id": orchestrator_id,
            "orchestrator_slug": orchestrator_slug,
            "config_hash": config_hash,
            "trigger": trigger,
            "principal": principal[:200],
            "conversation_id": conversation_id,
            "input": _jsonable(input or {}),
        }
        # The id is known before the row exists: the row can be written off the streaming path.
        self.fields["id"] = str(uuid.uuid4())
        self.created = False
        self.events: list[RunEvent] = []
        self.started = time.perf_counter()

    @property
    def run_id(self) -> str:
        return str(self.fields["id"])

    def start(self) -> str:
        """The `running` row; optional (finish writes it when start never ran), and never to be
        run concurrently with finish."""
        with schema_context(self.schema_name):
            self._write_row()
        self.created = True
        return self.run_id

    def _write_row(self) -> None:
        if self.fields["trigger"] == Run.Trigger.QUEUE:
            # A queued run's row exists from its enqueue (engine/durable): the turn adopts it.
            fields = {k: v for k, v in self.fields.items() if k != "id"}
            if Run.objects.filter(pk=self.run_id, status=Run.Status.QUEUED).update(
                status=Run.Status.RUNNING, **fields
            ):
                return
        Run.objects.create(**self.fields)

    def observe(self, event: Any) -> None:
        """A runtime event (orchestrators.runtime); tokens are not steps and are not recorded."""
        kind = getattr(event, "type", "")
        if kind == "step":
            self._add(
                "step",
                event.name,
                event.status,
                event.duration_ms,
                event.detail,
                event.detail.get("error", "") if isinstance(event.detail, dict) else "",
            )
        elif kind == "tool_call":
            self._add(
                "tool_call",
                event.name,
                "started",
                None,
                {"id": event.id, "arguments": event.arguments},
            )
        elif kind == "tool_result":
            self._add(
                "tool_result",
                event.name,
                "failed" if event.error else "completed",
                None,
                {"id": event.id, "result": event.result},
                event.error or "",
            )

    def _add(
        self,
        kind: str,
        name: str,
        outcome: str,
        duration_ms: float | None,
        data: Any,
        error: str = "",
    ) -> None:
        self.events.append(
            RunEvent(
                seq=len(self.events) + 1,
                kind=kind,
                name=name[:200],
                outcome=outcome,
                duration_ms=duration_ms,
                data=_jsonable(data),
                error=error,
                at=timezone.now(),
            )
        )

    def finish(
        self,
        *,
        status: str,
        output: str = "",
        usage: dict | None = None,
        error: str = "",
        then: Callable[[], Any] | None = None,
    ) -> None:
        """The outcome and the steps in one transaction; `then` runs inside it (in the schema), so
        what a caller stores beside the run (a chat reply) is written with it or not at all."""
        duration = (time.perf_counter() - self.started) * 1000
        with schema_context(self.schema_name), transaction.atomic():
            if not self.created:
                self._write_row()
                self.created = True
            Run.objects.filter(pk=self.run_id).update(
                status=status,
                output=output,
                usage=usage or {},
                error=error[:5000],
                finished_at=timezone.now(),
                duration_ms=round(duration, 3),
            )
            for event in self.events:
                event.run_id = self.run_id
            RunEvent.objects.bulk_create(self.events)
            if then is not None:
                then()
