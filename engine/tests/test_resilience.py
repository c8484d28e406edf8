from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass

import pytest

from engine import (
    Cadence,
    CircuitOpenError,
    RetryExhaustedError,
    Score,
    TimeoutError,
    circuit_breaker,
    fallback,
    note,
    retry,
    timeout,
)
from engine.resilience import (
    ManualClock,
    compute_delay,
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


# -- retry -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        ("fixed", [0.5, 0.5, 0.5]),
        ("linear", [0.5, 1.0, 1.5]),
        ("exponential", [0.5, 1.0, 2.0]),
        (3, [0.5, 1.5, 4.5]),
    ],
)
def test_retry_backoff_schedules(clock, backoff, expected):
    fn, state = flaky(3)
    wrapped = retry(max_attempts=4, delay=0.5, backoff=backoff)(fn)
    score = S()
    asyncio.run(wrapped(score))
    assert (score.status, state["calls"]) == ("ok", 4)
    assert clock.sleeps == expected
    assert clock.monotonic() == sum(expected)


def test_retry_caps_with_max_delay_and_adds_bounded_jitter():
    assert compute_delay(10, delay=1.0, backoff="exponential", max_delay=5.0, jitter=False) == 5.0
    rng = random.Random(7)
    waits = [
        compute_delay(2, delay=1.0, backoff="exponential", max_delay=None, jitter=0.5, rng=rng)
        for _ in range(50)
    ]
    assert min(waits) >= 2.0
    assert max(waits) <= 3.0
    assert len(set(waits)) == 50


def test_retry_exhausted_raises_with_the_last_error(clock):
    fn, state = flaky(10)
    wrapped = retry(max_attempts=3, delay=1.0)(fn)
    with pytest.raises(RetryExhaustedError) as info:
        asyncio.run(wrapped(S()))
    assert (info.value.attempts, state["calls"], str(info.value.last_error)) == (3, 3, "fail 3")
    assert clock.sleeps == [1.0, 2.0]


def test_retry_only_retries_the_listed_exceptions(clock):
    fn, state = flaky(1, exc=ValueError)
    wrapped = retry(max_attempts=3, on=ConnectionError)(fn)
    with pytest.raises(ValueError):
        asyncio.run(wrapped(S()))
    assert state["calls"] == 1


def test_retry_wraps_sync_functions(clock):
    calls = []

    @retry(max_attempts=3, delay=2.0, backoff="fixed")
    def sync_flaky(score: S) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("x")
        score.status = "ok"

    score = S()
    sync_flaky(score)
    assert (score.status, clock.sleeps) == ("ok", [2.0, 2.0])


def test_retry_rejects_bad_configuration():
    with pytest.raises(ValueError):
        retry(max_attempts=0)
    with pytest.raises(ValueError):
        retry(backoff="quadratic")


# -- timeout -----------------------------------------------------------------------------


def test_async_timeout_fires_on_the_manual_clock(clock):
    @timeout(5.0)
    async def slow(score: S) -> None:
        await clock.sleep(10.0)
        score.status = "late"

    score = S()
    with pytest.raises(TimeoutError) as info:
        asyncio.run(slow(score))
    assert (info.value.seconds, info.value.note_name, score.status) == (5.0, "slow", "pending")
    assert isinstance(info.value, builtins_timeout())


def builtins_timeout():
    import builtins

    return builtins.TimeoutError


def test_async_timeout_lets_fast_notes_finish(clock):
    @timeout(5.0)
    async def quick(score: S) -> str:
        await clock.sleep(1.0)
        return "done"

    assert asyncio.run(quick(S())) == "done"


def test_sync_timeout_works_off_the_main_thread_without_signals(clock):
    @timeout(2.0)
    def blocking(score: S) -> None:
        clock.sleep_sync(3.0)  # a long blocking call, on the manual clock
        score.status = "late"

    errors = []

    def in_thread() -> None:
        try:
            blocking(S())
        except TimeoutError as exc:
            errors.append(exc.seconds)

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join(5)
    assert errors == [2.0]


def test_sync_timeout_real_clock_returns_results_and_times_out():
    @timeout(1.0)
    def fast(score: S) -> str:
        return "ok"

    @timeout(0.05)
    def stuck(score: S) -> None:
        time.sleep(0.5)

    assert fast(S()) == "ok"
    with pytest.raises(TimeoutError):
        stuck(S())


def test_timeout_rejects_non_positive_values():
    with pytest.raises(ValueError):
        timeout(0)


# -- fallback ----------------------------------------------------------------------------


def test_fallback_sets_a_field_default_copy():
    @fallback(default=[], field="result")
    async def fails(score: S) -> None:
        raise RuntimeError("down")

    first, second = S(), S()
    asyncio.run(fails(first))
    asyncio.run(fails(second))
    assert first.result == [] and first.result is not second.result


def test_fallback_handler_and_plain_default():
    async def handler(score: S, error: Exception) -> str:
        score.status = f"handled {error}"
        return "h"

    @fallback(handler=handler)
    async def fails(score: S) -> None:
        raise RuntimeError("x")

    @fallback(default="unknown")
    def sync_fails(score: S) -> str:
        raise RuntimeError("y")

    score = S()
    assert asyncio.run(fails(score)) == "h"
    assert score.status == "handled x"
    assert sync_fails(S()) == "unknown"


def test_fallback_only_catches_listed_exceptions():
    @fallback(default=1, on=KeyError)
    def fails(score: S) -> None:
        raise ValueError("no")

    with pytest.raises(ValueError):
        fails(S())


# -- @note shorthands and stacking -------------------------------------------------------


def test_note_shorthand_retry_and_timeout(clock):
    fn, state = flaky(2)
    wrapped = note(retry=3, timeout=15.0)(fn)
    score = S()
    asyncio.run(wrapped(score))
    assert (score.status, state["calls"], clock.sleeps) == ("ok", 3, [1.0, 2.0])


def test_note_dict_forms_fall_back_after_retries(clock):
    fn, state = flaky(10)
    wrapped = note(
        retry={"max_attempts": 3, "backoff": "exponential", "delay": 0.5},
        timeout=30.0,
        fallback={"default": None, "field": "result"},
    )(fn)
    score = S(result="old")
    asyncio.run(wrapped(score))
    assert (score.result, state["calls"], clock.sleeps) == (None, 3, [0.5, 1.0])


def test_note_timeout_applies_per_attempt(clock):
    attempts = []

    @note(retry={"max_attempts": 2, "delay": 1.0}, timeout=5.0)
    async def slow_then_fast(score: S) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            await clock.sleep(10.0)
        score.status = "ok"

    score = S()
    asyncio.run(slow_then_fast(score))
    assert (score.status, len(attempts)) == ("ok", 2)


def test_circuit_breaker_above_note_and_any_stacking_order(clock):
    fn, state = flaky(100)

    @circuit_breaker(failure_threshold=2, recovery_timeout=30.0, name="stack")
    @note
    async def guarded(score: S) -> None:
        await fn(score)

    @retry(max_attempts=2, delay=1.0)
    @circuit_breaker(failure_threshold=1, name="stack2")
    @fallback(default="fb", field="status")
    @timeout(1.0)
    async def deep(score: S) -> None:
        raise OSError("x")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            asyncio.run(guarded(S()))
    with pytest.raises(CircuitOpenError):
        asyncio.run(guarded(S()))
    score = S()
    asyncio.run(deep(score))
    assert score.status == "fb"


def test_resilient_notes_inside_a_cadence(clock):
    fn, state = flaky(1)
    cadence = Cadence("r", S()).then("call", note(retry=2)(fn))
    assert asyncio.run(cadence.run()).status == "ok"

    @note(timeout=1.0)
    async def hangs(score: S) -> None:
        await clock.sleep(5)

    failing = Cadence("t", S()).then("hang", hangs)
    # as in the library, the engine's own errors reach the caller unwrapped
    with pytest.raises(TimeoutError) as info:
        asyncio.run(failing.run())
    assert info.value.note_name == "hangs"


def test_manual_clock_records_time():
    manual = ManualClock(start=10.0)
    manual.advance(2.5)
    manual.sleep_sync(0.5)
    assert (manual.monotonic(), manual.sleeps) == (13.0, [0.5])
