"""The contract between orchestrator runtimes, LLM providers, tools and the surfaces that stream them.

Plain Python (no Django): adapters, providers and tools are built and tested on their own; the
Django side hands them plain settings (with secrets already decrypted) and reads their events.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# --- events a runtime streams ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenEvent:
    delta: str
    type: Literal["token"] = "token"


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    id: str
    name: str
    arguments: dict[str, Any]
    type: Literal["tool_call"] = "tool_call"


@dataclass(frozen=True, slots=True)
class ToolResultEvent:
    id: str
    name: str
    result: Any
    error: str | None = None
    type: Literal["tool_result"] = "tool_result"


@dataclass(frozen=True, slots=True)
class StepEvent:
    """A step of the run: a note of the engine, a node of a graph, an agent turn."""

    name: str
    status: Literal["started", "completed", "failed"]
    duration_ms: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    type: Literal["step"] = "step"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class FinalEvent:
    content: str
    usage: Usage
    finish_reason: str = "stop"
    # Calls of the client's own tools (RunContext.client_tools) the turn ended on, for the client
    # to run and answer in its next request (finish_reason "tool_calls").
    tool_calls: tuple[ToolCall, ...] = ()
    type: Literal["final"] = "final"


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A log line emitted while the run ran (engine/runs/runlog.py captures it). It travels with
    the runtime's events when the runtime routes it there (`log_route`), so that it keeps its
    place between the step events around it; the pipeline records it and never hands it to
    callers."""

    entry: dict[str, Any]
    type: Literal["log"] = "log"


RuntimeEvent = TokenEvent | ToolCallEvent | ToolResultEvent | StepEvent | FinalEvent

# Set by a runtime in the context its steps run in: a callable that puts a LogEvent among the
# runtime's own events, in order (thread-safe). Unset, captured lines go to the recorder at once.
log_route: contextvars.ContextVar[Callable[[LogEvent], None] | None] = contextvars.ContextVar(
    "cadence_log_route", default=None
)

# --- LLM providers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LLMSettings:
    """What a provider needs, decrypted. Never logged: repr hides the key."""

    provider: str
    model: str
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float = 60.0
    max_retries: int = 2
    config_id: str = ""  # names the circuit breaker: one per configuration


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LLMDelta:
    """A piece of the assistant's text as it streams."""

    content: str


@dataclass(frozen=True, slots=True)
class LLMResult:
    """The end of one model call: the full text, the complete tool calls, usage and why it stopped."""

    content: str
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    finish_reason: str


@dataclass(frozen=True, slots=True)
class ModelOptions:
    """What one request asks of the model, on top of its LLM configuration.

    The configuration's `temperature` is the default when the request sets none; its
    `max_tokens` caps the request's. Providers that cannot honour an option refuse the call
    (LLMError `unsupported_parameter`, 400) rather than ignore it.
    """

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # {"type": "json_object"} or {"type": "json_schema", "json_schema": {name, schema, strict}}
    response_format: dict[str, Any] | None = None
    # "required" or {"type": "function", "function": {"name": …}}; unset means "auto".
    tool_choice: Any = None


def effective_max_tokens(settings: LLMSettings, options: ModelOptions | None) -> int | None:
    values = [v for v in (options.max_tokens if options else None, settings.max_tokens) if v]
    return min(values) if values else None


def effective_temperature(settings: LLMSettings, options: ModelOptions | None) -> float | None:
    if options is not None and options.temperature is not None:
        return options.temperature
    return settings.temperature


class LLMError(Exception):
    """A model call that failed for good (after retries): a code a caller can show and a message."""

    def __init__(self, message: str, code: str = "llm_error", status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


class StepError(LLMError):
    """A step of the run that failed for good outside the model (a plugin's code note breaking a
    sandbox cap): surfaces, like a model failure, mapped to an error the caller can show."""

    def __init__(self, message: str, code: str = "step_failed"):
        super().__init__(message, code)


class ChatProvider(Protocol):
    async def stream(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        options: ModelOptions | None = None,
    ) -> AsyncIterator[LLMDelta | LLMResult]:
        """Yields LLMDelta pieces, then exactly one LLMResult. Raises LLMError."""
        ...


# --- tools ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolContext:
    org_slug: str
    run_id: str = ""
    # "<run id>:<step seq>" when the run is recorded: a tool that calls out over HTTP sends it as
    # the `Idempotency-Key` header, so a step cut short by a crash and run again is not applied
    # twice by a server that honours the header (the same step gets the same key on resume).
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema of the arguments object
    fn: Callable[[dict[str, Any], ToolContext], Awaitable[Any]]

    def spec(self) -> dict[str, Any]:
        """The OpenAI chat-completions tool declaration."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


# --- runtimes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunContext:
    org_slug: str
    run_id: str = ""
    user: str = ""
    # Awaited around every model call a runtime makes: before it with the messages about to be
    # sent (may raise to refuse the call; returns the most completion tokens the call may use, or
    # None), after a call it let through with the call's usage (zero when it failed).
    # The turn pipeline (engine/runs/pipeline.py) sets them; None elsewhere.
    before_model_call: Callable[[list[dict[str, Any]]], Awaitable[int | None]] | None = None
    after_model_call: Callable[[Usage], Awaitable[None]] | None = None
    # What the request asks of the model (sampling, response format), and the tools the client
    # declared and runs itself: a call of one ends the turn (FinalEvent.tool_calls).
    options: ModelOptions | None = None
    client_tools: tuple[dict[str, Any], ...] = ()
    # A durable run (engine/durable): the engine checkpoint store (save/load/delete) a runtime that
    # runs a cadence attaches with `.with_checkpoint(store, run_id)`, so that a run started again
    # after its worker died resumes after its last completed measure. Before a save the runtime
    # lets the caller observe every event emitted so far (the pipeline writes those steps with
    # the checkpoint). Runtimes that run no cadence ignore it.
    checkpoints: Any = None
    # A step's sequence number in the run's record, by the id of its "started" step event (once
    # that event has been observed): the tool idempotency key's second half. None: not recorded.
    step_seq: Callable[[str], int | None] | None = None
    # The lock service of the flow's exclusive sections (engine/exclusive.py): `await
    # exclusive(template, body)` runs body() holding the lock the template names for this run.
    exclusive: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None


class Runtime(Protocol):
    async def stream(
        self, history: list[dict[str, Any]], message: str, context: RunContext
    ) -> AsyncIterator[RuntimeEvent]:
        """Yields token, tool_call, tool_result and step events, then exactly one FinalEvent."""
        ...


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Everything an adapter needs to build a runtime, resolved and decrypted by the Django side."""

    org_slug: str
    instance_id: str
    slug: str
    framework: str
    flow: dict[str, Any]
    system_prompt: str
    llm: LLMSettings
    tools: tuple[Tool, ...] = ()
    max_steps: int = 8
    config_hash: str = ""
    # Extra engine notes a flow may name (a plugin's code notes), by name.
    notes: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    # Values secret whatever they look like (its plugins' secret settings): a run's log lines and
    # the server's own log replace them, as they do the model's key.
    secrets: tuple[str, ...] = ()


class Adapter(Protocol):
    name: str

    def available(self) -> bool:
        """Whether the framework's package is installed."""
        ...

    def build(self, config: RuntimeConfig) -> Runtime: ...
