"""The turn pipeline: the one way to run a turn of an orchestrator, whatever triggered it.

Every trigger (the chat WebSocket, REST with or without SSE, `/v1/chat/completions`, REST invoke,
the admin's try-it box, and queued runs) builds a `TurnRequest` and awaits `turn_run`. It takes
the runtime from the pool, records the run and its steps (`RunRecorder`), hands every runtime
event to the caller's `on_event`, maps every failure to one `ApplicationError`, and stores the
outcome. Callers keep only their delivery (socket frames, SSE, OpenAI chunks, JSON) and their
own concerns: chat stores the user's message first and the reply through `store`.

`turn_run` never raises for a failed turn: the failure is the outcome's `error` (the run is
`failed`). Cancelling the task that awaits it (a chat cancel, a server shutting down) ends the
turn `cancelled`; the outcome is recorded all the same (shielded), then returned.

Extension points (register a `TurnExtension` with `register()`, typically in an AppConfig.ready;
every method is optional and all run for every turn, in registration order):

- `run_fields(request, acquired)` → extra columns for the Run row when it is created. The
  definition snapshot a run is pinned to (issue 11) goes here (`{"snapshot_id": …}`), beside a
  model field of the same name.
- `before_model_call(turn, messages)` / `after_model_call(turn, usage)`: awaited around every
  model call the runtime makes (through `RunContext.before_model_call/after_model_call`; the
  native adapter calls them). Reserve a token budget before (raise `ApplicationError` to refuse
  the call: the turn fails with that error) and settle it after (usage is zero when the call
  failed; a call refused before it was made is not settled) (issue 13).
- `on_progress(turn)`: awaited every `PROGRESS_SECONDS` while the turn runs (tokens streaming
  or not: a model slow to its first token or a long tool call sends no event, and a heartbeat
  that waited for one would let a sweep take a live turn), never concurrently with itself, and
  once at the end (`turn.finishing` set), with `turn.text` (the reply so far) and
  `turn.run_id`: the heartbeat of the
  process that owns the run and the partial reply, for orphan recovery (issue 8:
  engine/runs/orphans.py for runs, chat/orphans.py for replies).
- `on_finish(turn, outcome)`: synchronous, in the tenant's schema, inside the transaction that
  writes the run's outcome.
- `after_write(turn, outcome)`: synchronous, on the thread and connection that wrote the run,
  after that transaction ended (committed or not: it runs when the write failed too), in the
  run's schema (write elsewhere by naming or entering the schema); stale connections are closed
  around the whole write, not around each extension. For what must be written whatever became of the run and must not hold the run's
  transaction open (or its locks) while it does: the turn's usage records (tenants/limits), the
  run's proof taken into the organization's log (engine/trust).

Per-request model parameters and client-side tools (issue 9) travel on the request:
`TurnRequest.parameters` (the fields of `orchestrators.runtime.ModelOptions`: temperature,
max_tokens, stop, response_format, …) and `TurnRequest.client_tools` (OpenAI tool declarations
the client executes itself). The pipeline records them in the run's input and hands them to the
runtime in `RunContext.options` / `RunContext.client_tools`; a turn that ends on a call of a
client tool has `finish_reason` "tool_calls" and the calls in `TurnOutcome.client_tool_calls`.

Durable runs (issue 11, engine/durable) set `TurnRequest.checkpoints`: a checkpoint store with a
synchronous `write(run_id, checkpoint, *, steps)` (engine.durable.checkpoints.DatabaseCheckpointStore;
`steps`: the run's step records written so far, seq 1..steps). The
runtime gets it in `RunContext.checkpoints` and saves after each measure; each save writes, in
one transaction, the checkpoint and the steps finished so far, so a run taken up again after its
worker died keeps those steps, numbers its new ones after them, and resumes after its last
completed measure. Every recorded turn hands the runtime `RunContext.step_seq`, from which tools
get their idempotency key `<run id>:<step seq>` (`ToolContext.idempotency_key`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from django.db import close_old_connections, connection

from cadence_site.errors import ApplicationError
from cadence_site.pipelined import Guarded
from cadence_site.requestlog import org_var, principal_var, request_id_var, secrets_var
from engine.errors import CadenceError
from engine.runs import live, runlog, telemetry
from engine.runs.recorder import RunRecorder
from orchestrators.pool import Acquired, pool
from orchestrators.runtime import (
    FinalEvent,
    LLMError,
    ModelOptions,
    RunContext,
    RuntimeEvent,
    StepEvent,
    TokenEvent,
    ToolCallEvent,
    ToolResultEvent,
    Usage,
)
from tenants.context import turn_db

logger = logging.getLogger(__name__)

PROGRESS_SECONDS = 1.0
_LLM_STATUS = {"llm_rate_limited": 429, "llm_timeout": 504, "egress_denied": 400}
_background: set[asyncio.Task] = set()


@dataclass
class TurnRequest:
    schema_name: str
    org_slug: str
    ref: str  # the orchestrator's id or slug
    message: str
    history: list[dict[str, Any]]
    trigger: str  # a Run.Trigger value
    principal: str = ""
    conversation_id: str | None = None
    # Whose run it is: who sees it besides the organization's admins and owners.
    owner_user_id: int | None = None
    owner_api_key_id: str | None = None
    # The caller's organization id and, for a key principal, its key's id, when the trigger has
    # them at hand (/v1): extensions (budgets) use them instead of reading them again.
    org_id: int | None = None
    key_id: str | None = None
    # Known before the row exists, so a response can name the run at once.
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # A runtime the caller already took from the pool (to answer "no such model" its own way).
    acquired: Acquired | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # issue 9
    client_tools: list[dict[str, Any]] = field(default_factory=list)  # issue 9
    # Columns the trigger sets on the Run row itself (a replay: replay_of, replay_step, input).
    run_fields: dict[str, Any] = field(default_factory=dict)
    # A durable run's checkpoint store (see the module docstring); None: no checkpoints.
    checkpoints: Any = None


@dataclass
class TurnOutcome:
    run_id: str
    status: str  # a Run.Status value: succeeded, failed, cancelled
    content: str = ""
    finish_reason: str = "stop"
    usage: dict[str, int] = field(default_factory=dict)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    error: ApplicationError | None = None
    acquired: Acquired | None = None
    # Calls of the client's own tools the turn ended on (finish_reason "tool_calls").
    client_tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def recorded(self) -> bool:
        """Whether the outcome has a Run row (none when the runtime could not be acquired)."""
        return self.acquired is not None

    @property
    def error_text(self) -> str:
        return f"{self.error.code}: {self.error.message}" if self.error is not None else ""


@dataclass
class Turn:
    """What extensions see of a turn in flight."""

    request: TurnRequest
    acquired: Acquired | None = None
    text: list[str] = field(default_factory=list)
    # Set for the last `on_progress`, just before the outcome is written: a heartbeat whose
    # row the outcome's own write updates in a moment can skip its write.
    finishing: bool = False
    # The run's recorder once the runtime is acquired: `on_finish` may read what it wrote
    # (RunRecorder.stored_rows) rather than read the rows back.
    recorder: RunRecorder | None = None

    @property
    def run_id(self) -> str:
        return self.request.run_id


class TurnExtension:
    """Subclass, override what you need, and `register()` an instance (see the module docstring)."""

    def run_fields(self, request: TurnRequest, acquired: Acquired) -> dict[str, Any]:
        return {}

    async def before_model_call(self, turn: Turn, messages: list[dict[str, Any]]) -> int | None:
        return None

    async def after_model_call(self, turn: Turn, usage: Usage) -> None:
        return None

    async def on_progress(self, turn: Turn) -> None:
        return None

    def finish_statements(self, turn: Turn, outcome: TurnOutcome) -> list[Guarded]:
        """Statements written with the run's outcome, in its transaction and its round trip,
        each in a savepoint of its own: one the database refuses is logged and leaves the run
        recorded without it (cadence_site/pipelined.py; each `Guarded.done` is told what it
        wrote). Called before `on_finish`, once the run's rows are final
        (RunRecorder.stored_rows), for a recorded run only."""
        return []

    def on_finish(self, turn: Turn, outcome: TurnOutcome) -> None:
        return None

    def writes_on_finish(self, turn: Turn, outcome: TurnOutcome) -> bool:
        """Whether `on_finish` writes what must be committed with the run, in its transaction
        (asked after `finish_statements`). When no extension's does and no chat reply is stored
        with it, the run's transaction is begun, written and committed in one round trip, and
        `on_finish` runs just after its commit (what it sends then goes in a transaction of its
        own; its transaction.on_commit callbacks run after it). By default, whether this
        extension has an `on_finish` of its own: override to say False only when that is so."""
        return type(self).on_finish is not TurnExtension.on_finish

    def after_write(self, turn: Turn, outcome: TurnOutcome) -> None:
        return None


_extensions: list[TurnExtension] = []


def register(extension: TurnExtension) -> TurnExtension:
    if extension not in _extensions:
        _extensions.append(extension)
    return extension


def unregister(extension: TurnExtension) -> None:
    if extension in _extensions:
        _extensions.remove(extension)


def llm_error_to_application(exc: LLMError) -> ApplicationError:
    return ApplicationError(
        str(exc),
        exc.code,
        {"provider_status": exc.status} if exc.status else {},
        status=_LLM_STATUS.get(exc.code, 502),
    )


def error_for(exc: BaseException, *, run_id: str) -> ApplicationError:
    """Every failure of a turn, as the one error its callers show."""
    if isinstance(exc, asyncio.CancelledError):
        return ApplicationError(
            "The turn was cancelled before the reply was complete.", "cancelled", status=503
        )
    # The engine wraps what a note raised (NoteError.original_error): the cause is what counts.
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return cause
        if isinstance(cause, LLMError):
            return llm_error_to_application(cause)
        cause = getattr(cause, "original_error", None)
    if isinstance(exc, CadenceError):
        return ApplicationError(exc.message, exc.code, exc.details, status=502)
    logger.error("turn failed unexpectedly", exc_info=exc, extra={"run": run_id})
    return ApplicationError("The orchestrator failed unexpectedly.", "turn_failed", status=500)


async def turn_run(
    request: TurnRequest,
    *,
    on_event: Callable[[RuntimeEvent], Awaitable[None]] | None = None,
    store: Callable[[TurnOutcome], None] | None = None,
) -> TurnOutcome:
    """One turn, recorded. `on_event` receives every runtime event as it happens (it may raise
    CancelledError to cancel the turn); `store(outcome)` runs in the tenant's schema inside the
    transaction that records the outcome (a chat reply is written there)."""
    turn = Turn(request, acquired=request.acquired)
    outcome = TurnOutcome(run_id=request.run_id, status="succeeded")
    recorder: RunRecorder | None = None
    in_progress: tuple[str, str] | None = None  # the run's metrics labels while it runs
    starting: asyncio.Future | None = None
    final: FinalEvent | None = None
    pulse = _Pulse(turn) if _extensions else None
    logging_to: contextvars.Token | None = None
    try:
        acquired = turn.acquired or await pool.acquire(
            schema_name=request.schema_name, org_slug=request.org_slug, ref=request.ref
        )
        turn.acquired = outcome.acquired = acquired
        recorder = turn.recorder = _recorder(request, acquired)
        in_progress = telemetry.run_started(org=request.org_slug, orchestrator=acquired.slug)
        if request.checkpoints is not None:
            await _db(recorder.resume)  # steps an earlier attempt wrote are kept
        # What the run's code logs from here on is the run's (engine/runs/runlog.py).
        secrets = _secrets(acquired)
        logging_to = runlog.bind(runlog.RunLogBinding(recorder.log, secrets))
        hiding = secrets_var.set(secrets)  # from the server's console log too
        # The run's row is written beside the model call, not before it: first tokens don't wait.
        starting = asyncio.ensure_future(_start(recorder))
        events = acquired.runtime.stream(
            request.history, request.message, _run_context(turn, request, recorder)
        )
        # aclosing: on an error or a cancel the runtime's own cleanup (its engine task, open
        # provider streams) runs now, not whenever the generator is garbage-collected.
        async with aclosing(events):
            async for event in events:
                recorder.observe(event)
                if event.type == "log":  # the run's, not the caller's
                    continue
                if isinstance(event, TokenEvent):
                    turn.text.append(event.delta)
                elif isinstance(event, ToolCallEvent):
                    outcome.tool_calls.append(
                        {"id": event.id, "name": event.name, "arguments": event.arguments}
                    )
                elif isinstance(event, ToolResultEvent):
                    for call in outcome.tool_calls:
                        if call["id"] == event.id:
                            call["result"], call["error"] = event.result, event.error
                elif isinstance(event, StepEvent) and event.status != "started":
                    outcome.steps.append(
                        {
                            "name": event.name,
                            "status": event.status,
                            "duration_ms": event.duration_ms,
                        }
                    )
                elif isinstance(event, FinalEvent):
                    final = event
                if on_event is not None:
                    await on_event(event)
        if final is None:
            raise ApplicationError(
                "The orchestrator ended without a reply.", "no_reply", status=502
            )
        outcome.content = final.content
        outcome.usage = final.usage.as_dict()
        outcome.finish_reason = final.finish_reason
        outcome.client_tool_calls = [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in final.tool_calls
        ]
    except (Exception, asyncio.CancelledError) as exc:
        outcome.status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
        outcome.content = "".join(turn.text)
        outcome.error = error_for(exc, run_id=request.run_id)
    if logging_to is not None:
        runlog.unbind(logging_to)
        secrets_var.reset(hiding)
    if starting is not None:
        await _settle(asyncio.gather(starting, return_exceptions=True))
    if pulse is not None:
        await pulse.end()
    if _extensions:
        turn.finishing = True
        await _progress(turn)
    await _settle(asyncio.ensure_future(_finish(turn, recorder, outcome, store, in_progress)))
    return outcome


def _recorder(request: TurnRequest, acquired: Acquired) -> RunRecorder:
    recorder = RunRecorder(
        schema_name=request.schema_name,
        orchestrator_id=acquired.instance_id,
        orchestrator_slug=acquired.slug,
        config_hash=acquired.config_hash,
        trigger=request.trigger,
        principal=request.principal,
        conversation_id=request.conversation_id,
        input=_run_input(request),
        environment=_environment(acquired),
    )
    recorder.fields["id"] = request.run_id
    recorder.fields["owner_user_id"] = request.owner_user_id
    recorder.fields["owner_api_key_id"] = request.owner_api_key_id
    recorder.fields.update(request.run_fields)
    for extension in _extensions:
        recorder.fields.update(extension.run_fields(request, acquired))
    recorder.publisher = live.RunPublisher(
        recorder=recorder,
        schema_name=request.schema_name,
        run_id=request.run_id,
        owner={"user": request.owner_user_id, "key": request.owner_api_key_id},
    )
    return recorder


async def _start(recorder: RunRecorder) -> None:
    await _db(recorder.start)
    # Announced once the row exists: a watcher that hears of the run can read it.
    recorder.publisher.org(live.recorder_org_frame(recorder))


def _secrets(acquired: Acquired) -> tuple[str, ...]:
    """What a run's log lines never show, whatever it looks like: its model's key and its
    plugins' secret settings."""
    config = getattr(acquired.runtime, "config", None)
    key = getattr(getattr(config, "llm", None), "api_key", "")
    values = (key, *getattr(config, "secrets", ()))
    return tuple(value for value in values if isinstance(value, str) and value)


def _environment(acquired: Acquired) -> dict[str, Any]:
    """What the run ran on; never a secret (the LLM settings' key stays out)."""
    environment: dict[str, Any] = {
        "orchestrator": {
            "id": acquired.instance_id,
            "slug": acquired.slug,
            "version": acquired.version,
            "config_hash": acquired.config_hash,
        }
    }
    config = getattr(acquired.runtime, "config", None)
    if config is not None:
        environment["framework"] = config.framework
        environment["llm"] = {
            "config_id": config.llm.config_id,
            "provider": config.llm.provider,
            "model": config.llm.model,
        }
    return environment


def _run_input(request: TurnRequest) -> dict[str, Any]:
    recorded: dict[str, Any] = {
        "message": request.message,
        "history_messages": len(request.history),
    }
    if request.parameters:
        recorded["parameters"] = request.parameters
    if request.client_tools:
        recorded["client_tools"] = [
            (tool.get("function") or {}).get("name", "") for tool in request.client_tools
        ]
    return recorded


class _RecordedCheckpoints:
    """The request's checkpoint store, each save written with the steps finished so far."""

    def __init__(self, store: Any, recorder: RunRecorder) -> None:
        self.store, self.recorder = store, recorder

    async def save(self, run_id: str, checkpoint: Any) -> None:
        from django.db import transaction
        from django_tenants.utils import schema_context

        def write() -> None:
            with schema_context(self.recorder.schema_name), transaction.atomic():
                self.recorder.flush()
                steps = self.recorder.seq_base + self.recorder.flushed
                self.store.write(run_id, checkpoint, steps=steps)

        await _db(write)

    async def load(self, run_id: str) -> Any:
        return await self.store.load(run_id)

    async def delete(self, run_id: str) -> None:
        await self.store.delete(run_id)


def _run_context(turn: Turn, request: TurnRequest, recorder: RunRecorder) -> RunContext:
    before = after = None
    if _extensions:

        async def before(messages: list[dict[str, Any]]) -> int | None:
            caps = []
            for extension in list(_extensions):
                cap = await extension.before_model_call(turn, messages)
                if cap is not None:
                    caps.append(cap)
            return min(caps) if caps else None

        async def after(usage: Usage) -> None:
            for extension in list(_extensions):
                await extension.after_model_call(turn, usage)

    return RunContext(
        org_slug=request.org_slug,
        run_id=request.run_id,
        user=request.principal,
        before_model_call=before,
        after_model_call=after,
        options=ModelOptions(**request.parameters) if request.parameters else None,
        client_tools=tuple(request.client_tools),
        checkpoints=(
            _RecordedCheckpoints(request.checkpoints, recorder)
            if request.checkpoints is not None
            else None
        ),
        step_seq=recorder.seq_of,
        exclusive=_exclusive_sections(request),
    )


def _exclusive_sections(request: TurnRequest) -> Any:
    """The lock service of the flow's exclusive sections, keyed in the run's organization."""
    from engine.durable.locking import ExclusiveSections

    return ExclusiveSections(
        schema_name=request.schema_name,
        message=request.message,
        run_id=request.run_id,
        conversation_id=request.conversation_id,
    )


class _Pulse:
    """`on_progress` every PROGRESS_SECONDS while the turn runs: a timer until the first beat
    is due, then a task. Most turns end before it: for them no task (~10 µs a turn, with the
    loop turns its start and stop took)."""

    __slots__ = ("turn", "timer", "task", "stop")

    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self.task: asyncio.Future | None = None
        self.stop = asyncio.Event()
        # Its callback runs in this context (the turn's), and so does the task it starts.
        self.timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            PROGRESS_SECONDS, self._due
        )

    def _due(self) -> None:
        self.timer = None
        self.task = asyncio.ensure_future(self._beat())

    async def _beat(self) -> None:
        if not self.stop.is_set():  # due just as the turn ended: its last beat is the end's
            await _progress(self.turn)
        await _pulse(self.turn, self.stop)

    async def end(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None:
            # Stopped, not cancelled: a heartbeat being written finishes before the last one.
            self.stop.set()
            await _settle(asyncio.gather(self.task, return_exceptions=True))


async def _pulse(turn: Turn, stop: asyncio.Event) -> None:
    """`on_progress` every PROGRESS_SECONDS until `stop` is set."""
    while True:
        try:
            # A timeout scope, not wait_for (a task more per turn).
            async with asyncio.timeout(PROGRESS_SECONDS):
                await stop.wait()
            return
        except TimeoutError:
            await _progress(turn)


async def _progress(turn: Turn) -> None:
    for extension in list(_extensions):
        try:
            await extension.on_progress(turn)
        except Exception:  # a heartbeat that failed once must not fail the turn
            logger.exception("turn progress extension failed", extra={"run": turn.run_id})


async def _finish(
    turn: Turn,
    recorder: RunRecorder | None,
    outcome: TurnOutcome,
    store: Callable[[TurnOutcome], None] | None,
    in_progress: tuple[str, str] | None = None,
) -> None:
    from django_tenants.utils import schema_context

    def then() -> None:
        for extension in list(_extensions):
            extension.on_finish(turn, outcome)
        if store is not None:
            store(outcome)

    def guarded() -> list[Guarded]:
        statements = []
        for extension in list(_extensions):
            statements += extension.finish_statements(turn, outcome)
        return statements

    def then_apart() -> bool:
        return store is None and not any(
            extension.writes_on_finish(turn, outcome) for extension in list(_extensions)
        )

    def write() -> None:
        try:
            if recorder is None:  # the runtime was never acquired: there is no run to record
                with schema_context(turn.request.schema_name):
                    then()
                return
            recorder.finish(
                status=outcome.status,
                output=outcome.content,
                usage=outcome.usage,
                error=outcome.error_text,
                error_code=outcome.error.code if outcome.error is not None else "",
                then=then,
                guarded=guarded,
                then_apart=then_apart,
            )
        finally:
            if _extensions:
                _after_write(turn, outcome)

    if recorder is not None:
        recorder.seal()  # on the loop: the last frames' cursors, before the write stores them
    written = True
    try:
        await _db(write)
    except Exception:
        written = False
        logger.exception("recording a turn failed", extra={"run": turn.run_id})
    # Metrics and the trace, from what the recorder holds (no database read); never raises.
    telemetry.run_ended(
        org=turn.request.org_slug,
        trigger=turn.request.trigger,
        recorder=recorder,
        outcome=outcome,
        pair=in_progress,
    )
    if recorder is not None and recorder.publisher is not None:
        # After the write: a watcher told the run ended finds it stored.
        await recorder.publisher.close(
            live.recorder_end_frame(recorder) if written else None,
            live.recorder_org_frame(recorder) if written else None,
        )


def _after_write(turn: Turn, outcome: TurnOutcome) -> None:
    """The extensions' `after_write`, on the thread and connection that wrote the run (`_db`
    closes stale connections around the whole write, not around each of these), in the run's
    schema: what they write names its schema or enters it, and the schema the run's write left
    on the connection is the one the log's sequencing needs (no SET search_path back and
    forth). A connection the failed write may have broken is replaced first."""
    from django_tenants.utils import schema_context

    if connection.errors_occurred and not connection.in_atomic_block:
        close_old_connections()
    with schema_context(turn.request.schema_name):
        for extension in list(_extensions):
            try:
                extension.after_write(turn, outcome)
            except Exception:
                logger.exception("turn after-write extension failed", extra={"run": turn.run_id})


# A turn's database calls: on the loop in green calls, or on the sync caller's thread (see
# tenants.context.turn_db).
_db = turn_db


# Extensions write through the same path as the turn's own database calls (see `_db`).
db_call = _db


async def _settle(future: asyncio.Future) -> Any:
    """Await a future to its end even if the awaiting task is cancelled meanwhile: a cancelled
    turn is still recorded."""
    while True:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done():
                return future.result()


def turn_launch(coro: Awaitable[Any]) -> asyncio.Task:
    """Run a turn in its own task on the running loop, so that it outlives the request or socket
    that started it.

    A fresh context: an inherited one would tie the turn's database calls to the request's
    thread executor (asgiref's ThreadSensitiveContext, or the sync middleware's
    CurrentThreadExecutor), which is gone once the response ends; in a fresh context they run on
    pool threads, as consumers' do (`_db`). The log context (request, organization,
    principal) is carried over by hand.
    """
    context = contextvars.Context()
    for var in (request_id_var, org_var, principal_var):
        context.run(var.set, var.get())
    task = asyncio.get_running_loop().create_task(coro, context=context)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task
