"""Token budgets against real server processes: 200 streamed requests over 4 processes against one
budget spend no more than it, with max_tokens and without; a process killed mid-stream gives its
hold back once its lease lapses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter

import httpx
import pytest

from cadence_site.testing import start_live_servers, test_database_url
from orchestrators.tests.factories import orchestrators_remove, ready_orchestrator
from tenants.limits import budgets
from tenants.limits.models import UsageDay
from tenants.limits.tests.conftest import overridden

LEASE_SECONDS = 3
DEFAULT_COMPLETION = 6


def _servers(url: str, count: int):
    # Few database connections each: PostgreSQL's max_connections (100 by default) is shared by
    # both xdist workers and every process they start. With 16 pooled and 8 green connections,
    # these five servers held 64 at once (68 with this worker's own), and a live server of the
    # other worker that opened one then was refused ("too many clients"): a 500 on /v1/models,
    # once, in tenants/tests/test_access_watch.py. With 3 and 3 the module peaks at 32 and runs
    # no slower (18.6 s against 23.5 s).
    return start_live_servers(
        count,
        url,
        CADENCE_DB_POOL="1",
        CADENCE_DB_POOL_MAX="3",
        CADENCE_DB_GREEN_CONNECTIONS="3",
        CADENCE_LIMITS_REDIS_TIMEOUT="60",
        CADENCE_LIMITS_CACHE_SECONDS="0",
        CADENCE_BUDGET_LEASE_SECONDS=str(LEASE_SECONDS),
        CADENCE_BUDGET_DEFAULT_COMPLETION_TOKENS=str(DEFAULT_COMPLETION),
    )


@pytest.fixture(scope="module")
def _started(module_world, django_db_blocker):
    """Five processes started side by side: four serve the module, the fifth is the one the kill
    test kills (stopped here if that test did not run)."""
    with django_db_blocker.unblock():
        url = test_database_url()
    started = _servers(url, 5)
    yield started
    for server in started:
        if server.process.poll() is None:
            server.stop()


@pytest.fixture
def servers(_started):
    return _started[:4]


@pytest.fixture
def victim(_started):
    server = _started[4]
    assert server.process.poll() is None, "the process to kill was already killed"
    return server


@pytest.fixture
def bots(world, committed_db, empty_buckets):
    slugs = ("spendbot", "slowbot")
    orchestrators_remove("org_alpha", *slugs)
    UsageDay.objects.filter(organization_id=world.alpha.org.pk).delete()
    yield (
        ready_orchestrator("org_alpha", "spendbot"),
        ready_orchestrator("org_alpha", "slowbot", model="cadence-offline@150ms"),
    )
    UsageDay.objects.filter(organization_id=world.alpha.org.pk).delete()
    orchestrators_remove("org_alpha", *slugs)


def _body(model: str, text: str, max_tokens: int | None) -> dict:
    body = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": text}],
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def _read_stream(text: str) -> dict:
    """What one streamed reply said: its content, its error code, its usage."""
    found: dict = {"content": "", "error": None, "usage": None}
    for line in text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            found["error"] = chunk["error"].get("code")
            continue
        if chunk.get("usage"):
            found["usage"] = chunk["usage"]
        for choice in chunk.get("choices", []):
            found["content"] += (choice.get("delta") or {}).get("content") or ""
    return found


async def _fire(urls, key: str, bodies: list[dict]) -> list[tuple[int, dict]]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(i: int, body: dict):
            response = await client.post(
                f"{urls[i % len(urls)]}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
            )
            return response.status_code, _read_stream(response.text)

        return await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))


def _recorded_tokens(org_id: int) -> int:
    return sum(
        UsageDay.objects.filter(organization_id=org_id).values_list("total_tokens", flat=True)
    )


def _day_budget(world, limit: int) -> budgets.Budget:
    return budgets.Budget(
        str(world.alpha.org.public_id), "*", "tokens_per_day", limit, "organization"
    )


@pytest.mark.parametrize("max_tokens", [4, None], ids=["max_tokens", "no_max_tokens"])
def test_200_streams_over_4_processes_spend_no_more_than_the_budget(
    world, servers, bots, max_tokens
):
    budget = 600
    text = "please answer with a good number of words so the budget binds quickly"
    with overridden(
        world.alpha.org,
        tokens_per_day=budget,
        requests_per_minute=100_000,
        request_burst=100_000,
    ):
        results = asyncio.run(
            _fire(
                [s.url for s in servers],
                world.alpha.keys["member"],
                [_body("spendbot", text, max_tokens) for _ in range(200)],
            )
        )
        settled, held = budgets.used(budget=_day_budget(world, budget))

    outcomes = Counter(error or "ok" for _, error in ((s, r["error"]) for s, r in results))
    assert {status for status, _ in results} == {200}
    assert set(outcomes) == {"ok", "budget_exceeded"}, outcomes
    admitted = [r for _, r in results if r["error"] is None]
    cap = max_tokens or DEFAULT_COMPLETION
    # Every admitted reply stopped at its cap: the words of "Offline model. You said: …" past it
    # were never produced, so nothing was spent past the reservation.
    assert all(r["usage"]["completion_tokens"] <= cap for r in admitted)
    recorded = _recorded_tokens(world.alpha.org.pk)
    assert recorded == sum(r["usage"]["total_tokens"] for r in admitted)
    assert recorded <= budget
    assert (settled, held) == (recorded, 0)


def test_a_process_killed_mid_stream_gives_its_hold_back_when_its_lease_lapses(
    world, servers, victim, bots
):
    budget = 10_000
    with overridden(world.alpha.org, tokens_per_day=budget):

        async def start_and_kill() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                async with client.stream(
                    "POST",
                    f"{victim.url}/v1/chat/completions",
                    json=_body("slowbot", "one two three four five six seven", None),
                    headers={"Authorization": f"Bearer {world.alpha.keys['member']}"},
                ) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if '"content":"' in line and '"content":""' not in line:
                            break  # the model is streaming: its reservation is held
                    os.kill(victim.process.pid, signal.SIGKILL)
                    victim.process.wait(timeout=10)

        asyncio.run(start_and_kill())
        day = _day_budget(world, budget)
        settled, held = budgets.used(budget=day)
        assert settled == 0 and held > 0  # nobody settled it: its worker is gone

        # Nothing settles a dead worker's hold: the next reservation after its lease lapses
        # drops it, and that reservation gets the whole budget back.
        deadline = time.monotonic() + LEASE_SECONDS + 10
        while True:
            time.sleep(0.5)
            outcome = asyncio.run(
                _fire(
                    [servers[0].url],
                    world.alpha.keys["member"],
                    [_body("spendbot", "hello", 2)],
                )
            )[0][1]
            assert outcome["error"] is None
            settled, held = budgets.used(budget=day)
            if held == 0:
                break
            assert time.monotonic() < deadline, f"the hold of {held} tokens was never released"
        assert settled == _recorded_tokens(world.alpha.org.pk)
