"""Budgets and usage on the turn pipeline (engine/runs/pipeline.py's extension point).

Before every model call: estimate it (the prompt's tokens, plus the configured max_tokens or
CADENCE_BUDGET_DEFAULT_COMPLETION_TOKENS) and reserve that against every token budget of the
organization and of the calling key, all or nothing; a refusal fails the turn with 402
`budget_exceeded` (not retryable, unlike a 429). After it: settle with the provider's usage, or,
when the call broke before its usage arrived, with our own count of what streamed (marked
estimated), and add the call to the turn's usage. No principal is exempt: every key type and
every session user go through the same reservation.

The usage records (PostgreSQL, tenants/limits/usage.py) get a turn's calls together: with the
turn's run, in the round trip that begins and commits its transaction when it does
(`finish_statements`, cadence_site/pipelined.py: the shared row is locked only for that batch),
else once the run is written (`after_write`, on the thread that wrote it, after its transaction,
whether it committed or not), and during a long turn whenever its oldest unwritten call is
USAGE_WRITE_SECONDS old (on that call's settle). A turn's calls usually share one row (day,
principal, orchestrator, model), which every concurrent turn of the organization updates: one
upsert per call made 50 concurrent agent runs queue on that row's lock (2,000 upserts in 9 s;
a run 0.6 s slower and 50 µs more server CPU per step event, benchmarks/run_ingest.py). What a
crash can lose is the calls of a running turn since its last write (at most that many seconds):
its budget holds in Redis are settled per call all the same, and its run is failed by the sweep.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import date

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import Sum
from django_tenants.utils import schema_context

from cadence_site import greendb
from cadence_site.errors import ApplicationError
from cadence_site.pipelined import Guarded
from engine.runs.pipeline import Turn, TurnExtension
from orchestrators.runtime import Usage as RuntimeUsage
from tenants.context import db_sync_to_async
from tenants.limits import budgets, plans
from tenants.limits.enforce import ORG_PRINCIPAL
from tenants.limits.models import TOKEN_FIELDS, UsageDay
from tenants.limits.usage import Usage, usage_add, usage_statement

logger = logging.getLogger(__name__)

DEFAULT_COMPLETION_TOKENS = 1024
USAGE_WRITE_SECONDS = 2.0  # a running turn's calls wait at most this long for their record


async def _in_public(fn, /, **kwargs):
    """As the pipeline's own database calls (its `_db`: a sync caller's thread, else a pool
    thread), in the public schema, stale connections closed around it unless a sync caller's
    transaction is open (REST invoke and the admin's try-it run turns inside their request's
    transaction)."""

    def call():
        outside = not connection.in_atomic_block
        if outside:
            close_old_connections()
        try:
            with schema_context("public"):
                return fn(**kwargs)
        finally:
            if outside:
                close_old_connections()

    return await db_sync_to_async(call)()


def count_tokens(text: str, model: str = "") -> int:
    """tiktoken's count where its encoding is on disk, else a conservative 1 token per 3 chars.

    tiktoken downloads encodings on first use; a server must not reach out for that, so it is
    used only when TIKTOKEN_CACHE_DIR already holds the file."""
    encoding = _encoding(model)
    if encoding is not None:
        return len(encoding.encode(text, disallowed_special=()))
    return math.ceil(len(text) / 3)


_encodings: dict[str, object] = {}
_UNSEEN = object()


def _encoding(model: str):
    """The model's tiktoken encoding, or None (the estimate): decided once per model and process
    (TIKTOKEN_CACHE_DIR is read then, not at every count: a missing variable's lookup raises
    and catches KeyError, and this runs before every model call)."""
    import os

    found = _encodings.get(model, _UNSEEN)
    if found is not _UNSEEN:
        return found
    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        _encodings[model] = None
        return None
    try:
        import tiktoken

        try:
            encoding = tiktoken.encoding_for_model(model)
        except KeyError:
            encoding = tiktoken.get_encoding("cl100k_base")
    except Exception:  # no cached file, no network: fall back to the estimate
        encoding = None
    _encodings[model] = encoding
    return encoding


def messages_tokens(messages: list[dict], model: str = "") -> int:
    text = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        text.append(f"{message.get('role', '')}: {content or ''}")
        if message.get("tool_calls"):
            text.append(str(message["tool_calls"]))
    # A few tokens of framing per message, as the chat formats add.
    return count_tokens("\n".join(text), model) + 4 * len(messages)


@dataclass
class _Who:
    org_id: int
    principal: str
    key_id: str | None
    budgets: list[budgets.Budget]
    streams: list[budgets.Budget] = field(default_factory=list)


@dataclass
class _CallState:
    lease: budgets.Lease | None
    prompt_estimate: int
    text_from: int
    model: str


@dataclass
class _TurnState:
    who: _Who
    calls: list[_CallState] = field(default_factory=list)
    seq: int = 0
    stream: budgets.Lease | None = None  # this turn's place among the concurrent streams
    unwritten: _Unwritten = field(default_factory=lambda: _Unwritten())


class _Unwritten:
    """A turn's settled calls not yet in the usage records, summed per (orchestrator, model).
    Locked: a flow's parallel branches settle their calls on threads of their own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], list[int]] = {}
        self.since: float | None = None  # when the oldest of them settled (monotonic)

    def add(self, *, orchestrator: str, model: str, usage: Usage) -> None:
        with self._lock:
            row = self._rows.setdefault((orchestrator, model), [0, 0, 0, 0])
            row[0] += 1
            row[1] += usage.prompt_tokens
            row[2] += usage.completion_tokens
            row[3] += usage.total_tokens if usage.estimated else 0
            if self.since is None:
                self.since = time.monotonic()

    def due(self) -> bool:
        since = self.since
        return since is not None and time.monotonic() - since >= USAGE_WRITE_SECONDS

    def take(self) -> dict[tuple[str, str], list[int]]:
        """What is unwritten, taken out: two writers never add the same calls twice."""
        with self._lock:
            rows, self._rows, self.since = self._rows, {}, None
        return rows

    def give_back(self, key: tuple[str, str], row: list[int]) -> None:
        """A taken row that was not written, unwritten again (summed with any added since)."""
        with self._lock:
            mine = self._rows.setdefault(key, [0, 0, 0, 0])
            for index, value in enumerate(row):
                mine[index] += value
            if self.since is None:
                self.since = time.monotonic()

    def write(self, who: _Who) -> None:
        """Add what is unwritten to the usage records (the public schema's table: any schema)."""
        for (orchestrator, model), (requests, prompt, completion, estimated) in self.take().items():
            usage_add(
                **_usage_fields(who, orchestrator, model, requests, prompt, completion, estimated)
            )

    def statements(self, who: _Who, run_id: str) -> list[Guarded]:
        """What is unwritten as statements for the turn's write, which commits them with the
        run, in its round trip (`with_commit`: the row every concurrent turn updates is locked
        only for as long as that batch); a row they do not write is unwritten again, for
        `write` to add (after_write)."""
        statements = []
        for key, row in self.take().items():
            sql, values = usage_statement(**_usage_fields(who, *key, *row))

            def done(written: int | None, key=key, row=row) -> None:
                if written is None:
                    self.give_back(key, row)

            statements.append(
                Guarded(sql, values, done, what=f"the usage of run {run_id}", with_commit=True)
            )
        return statements


def _usage_fields(
    who: _Who,
    orchestrator: str,
    model: str,
    requests: int,
    prompt: int,
    completion: int,
    estimated: int,
) -> dict:
    return {
        "org_id": who.org_id,
        "principal": who.principal,
        "api_key_id": who.key_id,
        "orchestrator": orchestrator,
        "model": model,
        "usage": Usage(prompt, completion),
        "requests": requests,
        "estimated_tokens": estimated,
    }


def _who(
    *,
    schema_name: str,
    principal: str,
    org_id: int | None = None,
    key_id: str | None = None,
) -> _Who:
    """The budgets a turn counts against; `org_id`/`key_id` when the trigger knows them already
    (read here otherwise)."""
    from tenants.models import ApiKey, Organization

    if org_id is None:
        org_id = (
            Organization.objects.filter(schema_name=schema_name).values_list("id", flat=True).get()
        )
    limits = plans.org_limits(org_id=org_id)
    key_limits = plans.NO_KEY_LIMITS
    if not principal.startswith("key:"):
        key_id = None
    elif key_id is None:
        key_id = (
            ApiKey.objects.filter(prefix=principal[4:], organization_id=org_id)
            .values_list("id", flat=True)
            .first()
        )
    if key_id is not None:
        key_id = str(key_id)
        key_limits = plans.key_limits(key_id=key_id)
    return _who_of(limits, key_limits, org_id=org_id, principal=principal, key_id=key_id)


def _who_cached(*, principal: str, org_id: int | None, key_id: str | None) -> _Who | None:
    """`_who` from the limits this process holds, with no database call (the turn's first model
    call then needs no thread hop); None when something must be read."""
    if org_id is None:
        return None
    limits = plans.org_limits_cached(org_id=org_id)
    if limits is None:
        return None
    key_limits = plans.NO_KEY_LIMITS
    if not principal.startswith("key:"):
        key_id = None
    elif key_id is None:
        return None
    else:
        key_id = str(key_id)
        key_limits = plans.key_limits_cached(key_id=key_id)
        if key_limits is None:
            return None
    return _who_of(limits, key_limits, org_id=org_id, principal=principal, key_id=key_id)


def _who_of(limits, key_limits, *, org_id: int, principal: str, key_id: str | None) -> _Who:
    chosen = [
        budgets.Budget(limits.tenant, ORG_PRINCIPAL, name, getattr(limits, name), "organization")
        for name in TOKEN_FIELDS
        if getattr(limits, name) is not None
    ]
    chosen += [
        budgets.Budget(limits.tenant, principal, name, getattr(key_limits, name), "api key")
        for name in TOKEN_FIELDS
        if key_id is not None and getattr(key_limits, name) is not None
    ]
    streams = [
        budgets.Budget(limits.tenant, who, "concurrent_streams", value, owner)
        for who, value, owner in (
            (ORG_PRINCIPAL, limits.concurrent_streams, "organization"),
            (principal, key_limits.concurrent_streams if key_id else None, "api key"),
        )
        if value is not None
    ]
    return _Who(org_id, principal, key_id, chosen, streams)


def _seeds(*, who: _Who, indexes: list[int]) -> dict[int, int]:
    from django.utils import timezone

    today = timezone.now().date()
    seeds = {}
    for index in indexes:
        budget = who.budgets[index]
        rows = UsageDay.objects.filter(organization_id=who.org_id)
        if budget.principal != ORG_PRINCIPAL:
            rows = rows.filter(principal=budget.principal)
        if budget.field == "tokens_per_day":
            rows = rows.filter(day=today)
        else:
            rows = rows.filter(day__gte=date(today.year, today.month, 1), day__lte=today)
        seeds[index] = int(rows.aggregate(t=Sum("total_tokens"))["t"] or 0)
    return seeds


def budget_refusal(refusal: budgets.Refusal, amount: int) -> ApplicationError:
    period = refusal.budget.field.removeprefix("tokens_per_")
    return ApplicationError(
        f"Token budget reached: the {refusal.budget.owner}'s budget of {refusal.budget.limit} "
        f"tokens per {period} has {refusal.available} left and this call needs up to {amount}.",
        "budget_exceeded",
        {
            "budget": refusal.budget.field,
            "owner": refusal.budget.owner,
            "limit": refusal.budget.limit,
            "available": refusal.available,
            "requested": amount,
        },
        status=402,
    )


def _reserve(*, who: _Who, lease_id: str, amount: int) -> budgets.Lease | budgets.Refusal:
    result = budgets.reserve(budgets=who.budgets, lease_id=lease_id, amount=amount)
    if isinstance(result, list):  # Redis lost a day's or month's figure: rebuild it
        result = budgets.reserve(
            budgets=who.budgets,
            lease_id=lease_id,
            amount=amount,
            seeds=_seeds(who=who, indexes=result),
        )
    assert not isinstance(result, list)
    return result


def _model_of(turn: Turn) -> str:
    runtime = getattr(turn.acquired, "runtime", None)
    llm = getattr(getattr(runtime, "config", None), "llm", None)
    return getattr(llm, "model", "") or ""


def _max_tokens(turn: Turn) -> int:
    runtime = getattr(turn.acquired, "runtime", None)
    llm = getattr(getattr(runtime, "config", None), "llm", None)
    requested = turn.request.parameters.get("max_tokens") or turn.request.parameters.get(
        "max_completion_tokens"
    )
    configured = getattr(llm, "max_tokens", None)
    default = getattr(
        settings, "CADENCE_BUDGET_DEFAULT_COMPLETION_TOKENS", DEFAULT_COMPLETION_TOKENS
    )
    candidates = [v for v in (configured, requested) if isinstance(v, int) and v > 0]
    return min(candidates) if candidates else default


class BudgetExtension(TurnExtension):
    def _state(self, turn: Turn) -> _TurnState | None:
        return getattr(turn, "_cadence_budget", None)

    async def before_model_call(self, turn: Turn, messages: list[dict]) -> int | None:
        """Reserve the call's estimate; returns the completion tokens reserved, the most the call
        may produce (the runtime asks the model for no more)."""
        state = self._state(turn)
        if state is None:
            request = turn.request
            who = _who_cached(
                principal=request.principal, org_id=request.org_id, key_id=request.key_id
            ) or await _in_public(
                _who,
                schema_name=turn.request.schema_name,
                principal=turn.request.principal,
                org_id=turn.request.org_id,
                key_id=turn.request.key_id,
            )
            state = _TurnState(who)
            turn._cadence_budget = state  # type: ignore[attr-defined]
            if who.streams:
                state.stream = await self._stream_place(turn, who)
        model = _model_of(turn)
        prompt = messages_tokens(messages, model)
        call = _CallState(None, prompt, len(turn.text), model)
        state.calls.append(call)
        if not state.who.budgets:
            return None
        state.seq += 1
        completion = _max_tokens(turn)
        amount = prompt + completion
        lease_id = f"{turn.run_id}:{state.seq}"
        try:
            result = await _in_public(_reserve, who=state.who, lease_id=lease_id, amount=amount)
        except budgets.BudgetsUnavailable:
            if budgets.fail_open():
                return None
            raise ApplicationError(
                "Token budgets cannot be checked right now; try again shortly.",
                "budget_unavailable",
                status=503,
            ) from None
        if isinstance(result, budgets.Refusal):
            state.calls.pop()
            raise budget_refusal(result, amount)
        call.lease = result
        return completion

    async def _stream_place(self, turn: Turn, who: _Who) -> budgets.Lease | None:
        try:
            result = await sync_to_async(budgets.reserve, thread_sensitive=False)(
                budgets=who.streams, lease_id=f"{turn.run_id}:stream", amount=1
            )
        except budgets.BudgetsUnavailable:
            if budgets.fail_open():
                return None
            raise ApplicationError(
                "Stream limits cannot be checked right now; try again shortly.",
                "budget_unavailable",
                status=503,
            ) from None
        if isinstance(result, budgets.Refusal):
            error = ApplicationError(
                f"Too many replies streaming at once: the {result.budget.owner} allows "
                f"{result.budget.limit}. Try again when one has finished.",
                "too_many_streams",
                {"limit": result.budget.limit, "owner": result.budget.owner},
                status=429,
            )
            error.headers = {"Retry-After": "1"}
            raise error
        assert isinstance(result, budgets.Lease)
        return result

    async def after_model_call(self, turn: Turn, usage: RuntimeUsage) -> None:
        state = self._state(turn)
        if state is None or not state.calls:
            return
        call = state.calls.pop()
        estimated = usage.total_tokens == 0
        if estimated:
            streamed = "".join(turn.text[call.text_from :])
            if not streamed:
                # Nothing came back: charge nothing but release the hold.
                prompt, completion = 0, 0
            else:
                prompt, completion = call.prompt_estimate, count_tokens(streamed, call.model)
        else:
            prompt, completion = usage.prompt_tokens, usage.completion_tokens
        usage_of = Usage(prompt, completion, estimated=estimated and prompt + completion > 0)
        orchestrator = getattr(turn.acquired, "slug", "") or ""
        if call.lease is None and not state.unwritten.due():
            # Nothing held in Redis, nothing to write yet: no thread hop.
            _settle(state=state, call=call, usage=usage_of, orchestrator=orchestrator, write=False)
            return
        await _in_public(_settle, state=state, call=call, usage=usage_of, orchestrator=orchestrator)

    async def on_progress(self, turn: Turn) -> None:
        state = self._state(turn)
        if state is not None:
            leases = [c.lease for c in state.calls if c.lease is not None]
            if state.stream is not None:
                leases.append(state.stream)
            if leases:
                await sync_to_async(budgets.lease_refresh, thread_sensitive=False)(leases=leases)

    def finish_statements(self, turn, outcome) -> list[Guarded]:
        """The turn's usage, written with its run when the run's batch commits (see
        _Unwritten.statements); otherwise by `after_write`."""
        state = self._state(turn)
        if state is None:
            return []
        return state.unwritten.statements(state.who, turn.run_id)

    def writes_on_finish(self, turn, outcome) -> bool:
        return False  # a lease settled in Redis

    def on_finish(self, turn, outcome) -> None:
        state = self._state(turn)
        if state is None or state.stream is None:
            return
        try:
            # Redis, from the run's write: on a thread when that write is a green call.
            greendb.blocking(budgets.settle, lease=state.stream, actual=0)
        except budgets.BudgetsUnavailable:
            pass  # its lease lapses on its own within LEASE_SECONDS

    def after_write(self, turn, outcome) -> None:
        """The turn's calls not yet in the usage records (the run's batch did not commit them),
        after its run's transaction (not inside it: the usage row is shared by every concurrent
        turn, and its lock would be held until the run's commit)."""
        state = self._state(turn)
        if state is not None:
            write_usage(state)


def write_usage(state: _TurnState) -> None:
    """On the thread that wrote the run (pipeline `after_write`: stale connections are closed
    around that whole write), in whatever schema it is in: usage_add names the public schema's
    table in full, so entering `public` would only cost a SET search_path there and another
    one back for the next statement in the run's schema."""
    state.unwritten.write(state.who)


def _settle(
    *, state: _TurnState, call: _CallState, usage: Usage, orchestrator: str, write: bool = True
) -> None:
    """`write`: may write the turn's usage records when they are due (on a thread, not the
    event loop)."""
    first = True
    if call.lease is not None:
        try:
            first = budgets.settle(lease=call.lease, actual=usage.total_tokens)
        except budgets.BudgetsUnavailable:
            first = True  # recorded all the same; Redis is rebuilt from the records
    if first and (usage.total_tokens or call.lease is not None):
        state.unwritten.add(orchestrator=orchestrator, model=call.model, usage=usage)
    if write and state.unwritten.due():
        state.unwritten.write(state.who)


budget_extension = BudgetExtension()
