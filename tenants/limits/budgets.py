"""Token budgets: reserve before a model call, settle after it, all or nothing, in one script.

A reservation is a lease: an amount held against every budget that applies (the organization's
and the key's, per minute, day and month) under an id tied to the run and its model call. The
reserve script first drops leases whose deadline passed (their worker died: nothing settles
them), then admits the amount into every budget or none. Settling replaces the lease by what
the call really used, once: a second settle of the same lease is a no-op (a marker key).

A lease's deadline is LEASE_SECONDS ahead and is pushed forward while the call streams
(`lease_refresh`), so a live call keeps its hold and a dead worker's hold is gone within
LEASE_SECONDS of its last heartbeat, at the next reservation.

Per-day and per-month figures start from the usage records when their Redis key is missing
(Redis restarted or lost its data): the script says so and the caller seeds it from PostgreSQL,
the system of record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from django.conf import settings

from tenants import ratelimit

LEASE_SECONDS = 45  # CADENCE_BUDGET_LEASE_SECONDS overrides it


def lease_seconds() -> float:
    return float(getattr(settings, "CADENCE_BUDGET_LEASE_SECONDS", LEASE_SECONDS))


_PERIODS = {
    "tokens_per_minute": ("m", 120),
    "tokens_per_day": ("d", 2 * 86400),
    "tokens_per_month": ("M", 32 * 86400),
    # Not a period: turns streaming at once, each holding 1 until it ends or its lease lapses.
    "concurrent_streams": ("s", 86400),
}

RESERVE_LUA = """
local now, lease, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local amount, n = tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local seed = ARGV[5 + 3 * i]
    if seed == 'need' then return {-1, i, 0} end
    if seed ~= '' then redis.call('HSET', KEYS[i], 'u', seed) end
  end
end
for i = 1, n do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[n + i], '-inf', now)) do
    local held = tonumber(redis.call('HGET', KEYS[i], 'l:' .. id) or 0)
    redis.call('HDEL', KEYS[i], 'l:' .. id)
    redis.call('HINCRBY', KEYS[i], 'r', -held)
    redis.call('ZREM', KEYS[n + i], id)
  end
end
if redis.call('HEXISTS', KEYS[1], 'l:' .. lease) == 1 then return {1, 0, 0} end
for i = 1, n do
  local limit = tonumber(ARGV[3 + 3 * i])
  local used = tonumber(redis.call('HGET', KEYS[i], 'u') or 0)
  local held = tonumber(redis.call('HGET', KEYS[i], 'r') or 0)
  if used + held + amount > limit then return {0, i, limit - used - held} end
end
for i = 1, n do
  local expire = tonumber(ARGV[4 + 3 * i])
  redis.call('HINCRBY', KEYS[i], 'r', amount)
  redis.call('HSET', KEYS[i], 'l:' .. lease, amount)
  redis.call('ZADD', KEYS[n + i], now + ttl, lease)
  redis.call('EXPIRE', KEYS[i], expire)
  redis.call('EXPIRE', KEYS[n + i], expire)
end
return {1, 0, 0}
"""

# KEYS: the budgets' hashes, their lease sets, then the lease's settled marker.
SETTLE_LUA = """
local lease, actual, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('SET', KEYS[2 * n + 1], '1', 'NX', 'EX', 3 * 86400) == false then return 0 end
for i = 1, n do
  local held = redis.call('HGET', KEYS[i], 'l:' .. lease)
  if held then
    redis.call('HINCRBY', KEYS[i], 'r', -tonumber(held))
    redis.call('HDEL', KEYS[i], 'l:' .. lease)
  end
  redis.call('ZREM', KEYS[n + i], lease)
  -- A budget whose key is gone is seeded from the usage records at its next reservation,
  -- and those include this call: adding here too would count it twice.
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('HINCRBY', KEYS[i], 'u', actual) end
end
return 1
"""

REFRESH_LUA = """
for i = 1, #KEYS do redis.call('ZADD', KEYS[i], 'XX', ARGV[1], ARGV[2]) end
return 1
"""


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget: `limit` tokens per period for a tenant's principal ("*": the organization)."""

    tenant: str
    principal: str
    field: str  # tokens_per_minute / _day / _month
    limit: int
    owner: str  # what a refusal names: "organization" or "api key"

    def key(self, now: float) -> str:
        prefix, _ = _PERIODS[self.field]
        when = datetime.fromtimestamp(now, UTC)
        period = {
            "m": str(int(now // 60)),
            "d": when.strftime("%Y%m%d"),
            "M": when.strftime("%Y%m"),
            "s": "",
        }[prefix]
        return f"cadence:budget:{{{self.tenant}}}:{self.principal}:{prefix}{period}"

    @property
    def expire(self) -> int:
        return _PERIODS[self.field][1]

    @property
    def seeded(self) -> bool:
        """Per-day and per-month figures are rebuilt from usage records; per-minute ones not."""
        return self.field in ("tokens_per_day", "tokens_per_month")


@dataclass(frozen=True, slots=True)
class Lease:
    id: str
    amount: int
    keys: tuple[str, ...]  # budget hashes, fixed at reservation (a call may cross midnight)

    @property
    def lease_keys(self) -> list[str]:
        return [f"{k}:leases" for k in self.keys]


@dataclass(frozen=True, slots=True)
class Refusal:
    budget: Budget
    available: int


class BudgetsUnavailable(Exception):
    """Redis could not be asked (the caller applies fail-open or fail-closed)."""


def _client() -> redis.Redis:
    return ratelimit.sync_client()


def reserve(
    *,
    budgets: list[Budget],
    lease_id: str,
    amount: int,
    seeds: dict[int, int] | None = None,
    now: float | None = None,
) -> Lease | Refusal | list[int]:
    """A lease on every budget, a Refusal naming the first budget without room, or the indexes
    of budgets whose figure must be seeded from the usage records (call again with `seeds`)."""
    now = time.time() if now is None else now
    keys = [b.key(now) for b in budgets]
    args: list = [repr(now * 1000), lease_id, repr(lease_seconds() * 1000), amount, len(budgets)]
    for index, budget in enumerate(budgets):
        if not budget.seeded:
            seed = ""
        elif seeds is not None and index in seeds:
            seed = str(seeds[index])
        else:
            seed = "need"
        args += [budget.limit, budget.expire, seed]
    try:
        script = _client().register_script(RESERVE_LUA)
        status, index, available = script(keys=[*keys, *(f"{k}:leases" for k in keys)], args=args)
    except (redis.RedisError, OSError) as exc:
        ratelimit.redis_failed(exc)
        raise BudgetsUnavailable() from exc
    if int(status) == -1:
        return [i for i, b in enumerate(budgets) if b.seeded]
    if int(status) == 0:
        return Refusal(budgets[int(index) - 1], max(0, int(available)))
    return Lease(lease_id, amount, tuple(keys))


def _marker(lease: Lease) -> str:
    tenant = lease.keys[0].split("{", 1)[1].split("}", 1)[0]
    return f"cadence:budget:{{{tenant}}}:settled:{lease.id}"


def settle(*, lease: Lease, actual: int) -> bool:
    """Replace the lease by what was used. True the first time, False for a repeat."""
    n = len(lease.keys)
    script = _client().register_script(SETTLE_LUA)
    try:
        done = script(
            keys=[*lease.keys, *lease.lease_keys, _marker(lease)],
            args=[lease.id, max(0, actual), n],
        )
    except (redis.RedisError, OSError) as exc:
        ratelimit.redis_failed(exc)
        raise BudgetsUnavailable() from exc
    return bool(int(done))


def lease_refresh(*, leases: list[Lease], now: float | None = None) -> None:
    """Push the leases' deadlines forward (a heartbeat of the call that holds them)."""
    if not leases:
        return
    now = time.time() if now is None else now
    deadline = repr((now + lease_seconds()) * 1000)
    try:
        pipe = _client().pipeline(transaction=False)
        for lease in leases:
            pipe.eval(REFRESH_LUA, len(lease.keys), *lease.lease_keys, deadline, lease.id)
        pipe.execute()
    except (redis.RedisError, OSError) as exc:
        ratelimit.redis_failed(exc)


def used(*, budget: Budget, now: float | None = None) -> tuple[int, int]:
    """(settled, held) tokens of a budget's current period (tests, the limits page)."""
    now = time.time() if now is None else now
    values = _client().hmget(budget.key(now), "u", "r")
    return int(values[0] or 0), int(values[1] or 0)


def fail_open() -> bool:
    return getattr(settings, "CADENCE_LIMITS_FAIL_OPEN", True)


def clear_tenant(tenant: str) -> None:
    """Forget every budget figure and lease of one tenant (tests, an operator's reset)."""
    ratelimit.clear_tenant(tenant, prefix="cadence:budget")
