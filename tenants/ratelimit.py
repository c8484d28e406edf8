"""Rate limits: one atomic GCRA script per decision, one round trip, over every bucket it names.

GCRA (the generic cell rate algorithm) keeps one number per bucket, the theoretical arrival time
(TAT): a request is allowed when the TAT it would push the bucket to lies no more than the burst
tolerance ahead of now. A bucket with `limit` per `period` and a burst of B admits exactly B
requests at once and one more every period/limit after that: no fixed-window edge that lets twice
the limit through, and no counter to read before it is written.

A decision names every bucket that applies (the organization's, the caller's own, a surface's)
and the script admits the request into all of them or none: a request refused by the caller's
bucket spends nothing from the organization's. Time is Redis's own clock (TIME inside the
script), so every process decides on the same timeline.

Buckets are keyed `cadence:rl:{<tenant>}:<principal>:<scope>`, the tenant being the
organization's public id (a UUID: unique across every database sharing this Redis); the braces
keep one tenant's buckets in one Redis Cluster slot, so a multi-bucket script stays legal there.

Redis being away: with CADENCE_LIMITS_FAIL_OPEN (the default) requests are let through, counted
in `cadence_limits_degraded_total` and logged at most once a minute; fail-closed refuses them
(Retry-After of the back-off). Either way Redis is left alone for a few seconds after a failure,
so a dead server does not add a connect timeout to every request.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import redis
import redis.asyncio as aioredis
from django.conf import settings
from prometheus_client import Counter

from cadence_site.aredis import async_redis
from cadence_site.loops import LoopLocal

logger = logging.getLogger(__name__)

# Seconds. A dead Redis shows at connect (refused, or no answer within _CONNECT_TIMEOUT); a slow
# reply means a busy process (hundreds of requests in flight on two cores took over 2 s to read
# a sub-millisecond reply), and taking it for a dead Redis would let a burst through unlimited.
_TIMEOUT = getattr(settings, "CADENCE_LIMITS_REDIS_TIMEOUT", 5.0)
# A connect includes the client's handshake (a few round trips): under load it took over 0.5 s.
_CONNECT_TIMEOUT = min(_TIMEOUT, 2.0) if _TIMEOUT <= 5.0 else _TIMEOUT
_BACKOFF_SECONDS = 5.0
_POOL_SIZE = 16  # connections per process (sync) and per event loop (async)
_WARN_EVERY_SECONDS = 60.0

DEGRADED = Counter(
    "cadence_limits_degraded",
    "Limit decisions taken without Redis (allowed when fail-open, refused when fail-closed).",
    ["outcome"],
)

# KEYS: the buckets. ARGV[1]: now in ms ("" = Redis's clock), ARGV[2]: cost, then per bucket its
# emission interval (ms per request) and its tolerance (burst x emission, ms).
# Returns {allowed, index of the deciding bucket, its remaining, retry-after ms, reset ms}.
GCRA_LUA = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
else
  now = tonumber(ARGV[1])
end
local cost = tonumber(ARGV[2])
local tats = {}
local refused, retry = 0, 0
for i = 1, #KEYS do
  local emission = tonumber(ARGV[1 + 2 * i])
  local tolerance = tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + emission * cost
  local wait = new_tat - tolerance - now
  if wait > 0 then
    if wait > retry then refused, retry = i, wait end
  end
  tats[i] = new_tat
end
if refused > 0 then
  local tat = tonumber(redis.call('GET', KEYS[refused]) or now)
  if tat < now then tat = now end
  return {0, refused, 0, tostring(retry), tostring(tat - now)}
end
local best, best_remaining, best_reset = 1, -1, 0
for i = 1, #KEYS do
  local emission = tonumber(ARGV[1 + 2 * i])
  local tolerance = tonumber(ARGV[2 + 2 * i])
  local ahead = tats[i] - now
  redis.call('SET', KEYS[i], tostring(tats[i]), 'PX', math.ceil(ahead) + 1000)
  local remaining = math.floor((tolerance - ahead) / emission)
  if best_remaining < 0 or remaining < best_remaining then
    best, best_remaining, best_reset = i, remaining, ahead
  end
end
return {1, best, best_remaining, '0', tostring(best_reset)}
"""


@dataclass(frozen=True, slots=True)
class Bucket:
    """`limit` requests per `period` seconds, `burst` of them at once (default: `limit`)."""

    key: str
    limit: int
    period: float = 60.0
    burst: int | None = None
    name: str = ""  # what a refusal names: "organization", "api key", "login account", …

    @property
    def capacity(self) -> int:
        return self.burst or self.limit

    @property
    def emission_ms(self) -> float:
        return self.period * 1000.0 / self.limit

    @property
    def tolerance_ms(self) -> float:
        return self.emission_ms * self.capacity


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int  # the deciding bucket's requests per period
    remaining: int
    retry_after: float  # seconds until this request would be allowed; 0 when allowed
    reset: float  # seconds until the deciding bucket is full again
    period: float = 60.0
    bucket: str = ""
    degraded: bool = False  # decided without Redis

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after)) if not self.allowed else 0

    def headers(self) -> dict[str, str]:
        """`Retry-After` (refusals) and `X-RateLimit-*`: limit, remaining, seconds to full."""
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(math.ceil(self.reset)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers


def bucket_key(tenant: str, principal: str, scope: str) -> str:
    return f"cadence:rl:{{{tenant}}}:{principal}:{scope}"


# --- Redis, and what to do without it -------------------------------------------------------

_down_until = 0.0
_last_warning = 0.0
# redis.asyncio connections belong to the loop that opened them: one client per loop and URL.
_async_clients: LoopLocal[dict[str, aioredis.Redis]] = LoopLocal(dict)
_sync_scripts: dict[str, object] = {}


def fail_open() -> bool:
    return getattr(settings, "CADENCE_LIMITS_FAIL_OPEN", True)


def _without_redis(buckets: Sequence[Bucket]) -> Decision:
    first = buckets[0]
    if fail_open():
        DEGRADED.labels("allowed").inc()
        return Decision(
            True, first.limit, first.capacity, 0.0, 0.0, first.period, first.name, degraded=True
        )
    DEGRADED.labels("refused").inc()
    return Decision(
        False, first.limit, 0, _BACKOFF_SECONDS, _BACKOFF_SECONDS, first.period, first.name, True
    )


def _skipping() -> bool:
    return time.monotonic() < _down_until


def redis_failed(exc: BaseException) -> None:
    """Note a Redis failure: warn at most once a minute, and back off for a few seconds when
    Redis is unreachable. A timeout does not back off: it says Redis (or this process's loop) is
    slow, and skipping Redis for everyone on that account would let a whole burst through."""
    global _down_until, _last_warning
    now = time.monotonic()
    if _unreachable(exc):
        _down_until = now + _BACKOFF_SECONDS
    if now - _last_warning >= _WARN_EVERY_SECONDS:
        _last_warning = now
        logger.warning(
            "redis unavailable, limits %s",
            "not enforced" if fail_open() else "refusing requests",
            extra={"error": type(exc).__name__},
        )


def _unreachable(exc: BaseException | None) -> bool:
    """Redis refused or could not be reached (an OSError at the root), as opposed to a slow
    reply or a wait for a pooled connection, which say this process is busy, not Redis gone."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
            return True
        if isinstance(exc, redis.ConnectionError) and "connecting to" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def reset_backoff() -> None:
    """Forget a recent Redis failure (tests; an operator who just brought Redis back)."""
    global _down_until, _last_warning
    _down_until = _last_warning = 0.0


@lru_cache(maxsize=8)
def _sync_client(url: str) -> redis.Redis:
    # Bounded, as the async one: hundreds of request threads share a few sockets.
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=_POOL_SIZE,
        timeout=30.0,
        socket_timeout=_TIMEOUT,
        socket_connect_timeout=_CONNECT_TIMEOUT,
    )
    return redis.Redis(connection_pool=pool)


def sync_client() -> redis.Redis:
    return _sync_client(settings.REDIS_URL)


def async_client() -> aioredis.Redis:
    url = settings.REDIS_URL
    per_loop = _async_clients.get()
    client = per_loop.get(url)
    if client is None:
        # Bounded: a burst of requests on one process queues for a few sockets instead of
        # opening hundreds of connections at once (each connect is itself a few round trips).
        client = per_loop[url] = async_redis(
            url,
            blocking=True,
            max_connections=_POOL_SIZE,
            timeout=30.0,  # waiting for a free socket is queueing, not Redis being down
            socket_timeout=_TIMEOUT,
            socket_connect_timeout=_CONNECT_TIMEOUT,
        )
    return client


def _script_args(buckets: Sequence[Bucket], cost: int, now: float | None) -> tuple[list, list]:
    keys = [b.key for b in buckets]
    args: list = ["" if now is None else repr(now * 1000.0), cost]
    for bucket in buckets:
        args += [repr(bucket.emission_ms), repr(bucket.tolerance_ms)]
    return keys, args


def _decision(buckets: Sequence[Bucket], raw: list) -> Decision:
    allowed, index, remaining, retry_ms, reset_ms = raw
    bucket = buckets[int(index) - 1]
    return Decision(
        allowed=bool(int(allowed)),
        limit=bucket.limit,
        remaining=int(remaining),
        retry_after=float(retry_ms) / 1000.0,
        reset=float(reset_ms) / 1000.0,
        period=bucket.period,
        bucket=bucket.name,
    )


_async_scripts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _async_script(client: aioredis.Redis):
    script = _async_scripts.get(client)
    if script is None:
        script = _async_scripts[client] = client.register_script(GCRA_LUA)
    return script


def _sync_script():
    url = settings.REDIS_URL
    script = _sync_scripts.get(url)
    if script is None:
        script = _sync_scripts[url] = sync_client().register_script(GCRA_LUA)
    return script


def decide(buckets: Sequence[Bucket], *, cost: int = 1, now: float | None = None) -> Decision:
    """Admit one request (of `cost`) into every bucket, or into none (synchronous callers)."""
    if not buckets:
        raise ValueError("a decision needs at least one bucket")
    if _skipping():
        return _without_redis(buckets)
    keys, args = _script_args(buckets, cost, now)
    try:
        raw = _sync_script()(keys=keys, args=args, client=sync_client())
    except (redis.RedisError, OSError) as exc:
        redis_failed(exc)
        return _without_redis(buckets)
    return _decision(buckets, raw)


async def adecide(
    buckets: Sequence[Bucket], *, cost: int = 1, now: float | None = None
) -> Decision:
    """The same decision for async callers, on the loop's own connection (no thread hop)."""
    if not buckets:
        raise ValueError("a decision needs at least one bucket")
    if _skipping():
        return _without_redis(buckets)
    keys, args = _script_args(buckets, cost, now)
    client = async_client()
    try:
        raw = await _async_script(client)(keys=keys, args=args, client=client)
    except (redis.RedisError, OSError, TimeoutError) as exc:
        redis_failed(exc)
        return _without_redis(buckets)
    return _decision(buckets, raw)


def clear(*keys: str) -> None:
    """Forget buckets (tests, an operator's reset)."""
    if not keys:
        return
    try:
        sync_client().delete(*keys)
    except (redis.RedisError, OSError) as exc:
        redis_failed(exc)


def clear_tenant(tenant: str, prefix: str = "cadence:rl") -> None:
    """Forget every bucket of one tenant (tests, an operator resetting an organization)."""
    try:
        client = sync_client()
        found = list(client.scan_iter(match=f"{prefix}:{{{tenant}}}:*", count=500))
        if found:
            client.delete(*found)
    except (redis.RedisError, OSError) as exc:
        redis_failed(exc)
