"""Circuit breaker: every state transition, state shared per name, safety under concurrency."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import pytest

from engine import (
    CircuitOpenError,
    Score,
    circuit_breaker,
)
from engine.resilience import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    get_circuit_breaker,
)


@dataclass
class S(Score):
    status: str = "pending"
    result: object = None
    calls: int = 0


def flaky(failures: int, exc: type[Exception] = ConnectionError):
    state = {"calls": 0}

    async def fn(score: S) -> None:
        state["calls"] += 1
        score.calls = state["calls"]
        if state["calls"] <= failures and not state.get("healed"):
            raise exc(f"fail {state['calls']}")
        score.status = "ok"

    return fn, state


# -- circuit breaker ---------------------------------------------------------------------


def test_circuit_breaker_full_state_machine(clock):
    fn, state = flaky(100)
    guarded = circuit_breaker(failure_threshold=3, recovery_timeout=30.0, name="svc")(fn)
    breaker = get_circuit_breaker("svc")
    # closed: failures are counted and passed through
    for _ in range(2):
        with pytest.raises(ConnectionError):
            asyncio.run(guarded(S()))
    assert (breaker.state, breaker.failure_count) == (CLOSED, 2)
    # the third failure opens it
    with pytest.raises(ConnectionError):
        asyncio.run(guarded(S()))
    assert breaker.state == OPEN
    # open: calls are refused without running
    with pytest.raises(CircuitOpenError) as info:
        asyncio.run(guarded(S()))
    assert (info.value.circuit_name, info.value.retry_after, state["calls"]) == ("svc", 30.0, 3)
    # after the recovery timeout: half-open; a failing trial re-opens
    clock.advance(30.0)
    assert breaker.state == HALF_OPEN
    with pytest.raises(ConnectionError):
        asyncio.run(guarded(S()))
    assert breaker.state == OPEN
    # a successful trial closes it
    clock.advance(30.0)
    state["healed"] = True
    score = S()
    asyncio.run(guarded(score))
    assert (score.status, breaker.state, breaker.failure_count) == ("ok", CLOSED, 0)


def test_circuit_breaker_success_resets_the_failure_count(clock):
    calls = {"n": 0}

    @circuit_breaker(failure_threshold=2, name="reset")
    def sometimes(score: S) -> None:
        calls["n"] += 1
        if calls["n"] % 2:
            raise OSError("odd")

    for _ in range(6):
        try:
            sometimes(S())
        except OSError:
            pass
    assert get_circuit_breaker("reset").state == CLOSED


def test_circuit_state_is_shared_per_name(clock):
    @circuit_breaker(failure_threshold=1, name="shared")
    def a(score: S) -> None:
        raise OSError("a")

    @circuit_breaker(failure_threshold=1, name="shared")
    def b(score: S) -> None:
        return None

    with pytest.raises(OSError):
        a(S())
    with pytest.raises(CircuitOpenError):
        b(S())


def test_half_open_admits_a_single_trial_under_concurrency(clock):
    gate = asyncio.Event

    async def scenario() -> list[str]:
        release = gate()
        entered = []

        @circuit_breaker(failure_threshold=1, recovery_timeout=1.0, name="trial")
        async def svc(score: S) -> None:
            entered.append(1)
            if len(entered) == 1:
                raise OSError("first")
            await release.wait()

        with pytest.raises(OSError):
            await svc(S())
        clock.advance(1.0)
        outcomes = []

        async def call() -> None:
            try:
                await svc(S())
                outcomes.append("ran")
            except CircuitOpenError:
                outcomes.append("refused")

        tasks = [asyncio.create_task(call()) for _ in range(20)]
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*tasks)
        return sorted(outcomes)

    outcomes = asyncio.run(scenario())
    assert outcomes == ["ran"] + ["refused"] * 19
    assert get_circuit_breaker("trial").state == CLOSED


def test_circuit_breaker_thread_safety(clock):
    @circuit_breaker(failure_threshold=1000, name="threads")
    def fails(score: S) -> None:
        raise OSError("x")

    def hammer() -> None:
        for _ in range(100):
            try:
                fails(S())
            except (OSError, CircuitOpenError):
                pass

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    breaker = get_circuit_breaker("threads")
    assert (breaker.failure_count, breaker.state) == (800, CLOSED)
