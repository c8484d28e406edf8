"""Exclusive sections: a Redis lock with a lease and a fencing token.

`RedisLock.acquire` sets the lock key only if it is free (SET NX PX) and, in the same script,
takes the next value of the key's fencing counter: every holder gets a token larger than all
before it. The lease expires unless renewed, so a crashed holder never blocks the key forever.

A lease can be lost while its holder still runs (a long GC pause, a partition): the holder cannot
know. So every write the section guards goes through `fence_advance` in the write's own
transaction: the database remembers the highest token that wrote under the key and refuses a
lower one (`StaleTokenError`), so the old holder's late write is refused once a newer holder
wrote. `run_exclusive` also renews the lease while the step runs and cancels the step the moment
a renewal fails (`LockLostError`), so a lost lease fails the step rather than letting it go on.

Keys always carry the organization's schema: one organization's lock never blocks another's.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import connection, transaction

T = TypeVar("T")

# One script: the key is free, the token is taken and the lease set in one atomic step.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
  return token
end
return false
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LockTimeout(Exception):
    pass


class LockLostError(Exception):
    """The lease ended (expired, or taken by another holder) while the section was running."""


class StaleTokenError(Exception):
    """A write carried a fencing token older than one that already wrote under the same key."""


@dataclass(frozen=True)
class Lease:
    key: str
    token: int
    holder: str

    @property
    def value(self) -> str:
        return f"{self.token}:{self.holder}"


_KEY_PART = re.compile(r"[^A-Za-z0-9_.:-]")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")


def lock_key(template: str, context: Mapping[str, Any]) -> str:
    """Render a section's key template: `{conversation_id}`, `{input.customer_id}` (dotted paths
    into the context). A missing value is an error, never an empty key that would make every run
    share one lock; values are escaped so no value can forge another key's shape."""

    def value(match: re.Match) -> str:
        current: Any = context
        for part in match.group(1).split("."):
            if not isinstance(current, Mapping) or part not in current:
                raise KeyError(f"the lock key needs {match.group(1)!r}, which this run lacks")
            current = current[part]
        if current is None or current == "":
            raise KeyError(f"the lock key needs {match.group(1)!r}, which is empty")
        return _KEY_PART.sub(lambda m: f"%{ord(m.group()):02x}", str(current))[:200]

    rendered = _PLACEHOLDER.sub(value, template)
    if len(rendered) > 255:
        raise ValueError("the lock key is longer than 255 characters")
    return rendered


class RedisLock:
    def __init__(self, client, *, schema_name: str, key: str, lease_seconds: float = 10.0):
        if not 0.05 <= lease_seconds <= 3600:
            raise ValueError("a lease lasts between 0.05 s and an hour")
        self.client = client
        self.key = key
        self.lease_ms = int(lease_seconds * 1000)
        self._lock_key = f"cadence:lock:{schema_name}:{key}"
        self._fence_key = f"cadence:fence:{schema_name}:{key}"

    async def try_acquire(self) -> Lease | None:
        holder = uuid.uuid4().hex
        token = await self.client.eval(
            _ACQUIRE, 2, self._lock_key, self._fence_key, holder, self.lease_ms
        )
        return Lease(self.key, int(token), holder) if token else None

    async def acquire(self, *, wait: float = 10.0, poll: float = 0.02) -> Lease:
        deadline = time.monotonic() + wait
        while True:
            lease = await self.try_acquire()
            if lease is not None:
                return lease
            if time.monotonic() >= deadline:
                raise LockTimeout(f"the lock {self.key!r} stayed taken for {wait:g} s")
            await asyncio.sleep(poll)

    async def renew(self, lease: Lease) -> bool:
        return bool(await self.client.eval(_RENEW, 1, self._lock_key, lease.value, self.lease_ms))

    async def release(self, lease: Lease) -> bool:
        return bool(await self.client.eval(_RELEASE, 1, self._lock_key, lease.value))

    async def held(self, lease: Lease) -> bool:
        current = await self.client.get(self._lock_key)
        return current is not None and current.decode() == lease.value

    async def run_exclusive(self, fn: Callable[[Lease], Awaitable[T]], *, wait: float = 10.0) -> T:
        """Run `fn(lease)` holding the lock, renewing the lease every third of it; the moment a
        renewal fails, `fn` is cancelled and LockLostError raised."""
        lease = await self.acquire(wait=wait)
        body = asyncio.ensure_future(fn(lease))
        try:
            while True:
                done, _ = await asyncio.wait({body}, timeout=self.lease_ms / 3000)
                if done:
                    return body.result()
                if not await self.renew(lease):
                    body.cancel()
                    try:
                        await body
                    except asyncio.CancelledError:
                        pass
                    raise LockLostError(f"the lease on {self.key!r} was lost mid-step")
        finally:
            if not body.done():
                body.cancel()
            await self.release(lease)


def fence_advance(*, key: str, token: int) -> None:
    """Record that `token` writes under `key`; raises StaleTokenError if a newer token already
    did. Call it inside the transaction of the write it guards: the fence row stays locked until
    that transaction ends, so the check and the write are one step."""
    from engine.durable.models import LockFence

    table = LockFence._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (key, token, updated_at) VALUES (%s, %s, now()) "
            f"ON CONFLICT (key) DO UPDATE SET token = EXCLUDED.token, updated_at = now() "
            f"WHERE {table}.token <= EXCLUDED.token RETURNING token",
            [key, token],
        )
        if cursor.fetchone() is None:
            raise StaleTokenError(f"token {token} on {key!r} is older than one that already wrote")


# The lease of the exclusive section the current step runs in: a step that writes under it
# passes `lease.key` and `lease.token` to `fence_advance` in its write's transaction.
section_lease: contextvars.ContextVar[Lease | None] = contextvars.ContextVar(
    "cadence_section_lease", default=None
)


class ExclusiveSections:
    """The lock service of a run's exclusive sections (engine/exclusive.py): the key template is
    rendered from the run (`{input.<field>}`: the message read as a JSON object, beside
    `{input.message}`; `{conversation_id}`; `{run_id}`) and the step runs under `run_exclusive`
    in the organization's key space. A lost lease cancels the step and fails it (`lock_lost`);
    a key held longer than CADENCE_LOCK_WAIT_SECONDS fails it too (`lock_timeout`)."""

    def __init__(
        self,
        *,
        schema_name: str,
        message: str,
        run_id: str,
        conversation_id: str | None = None,
    ) -> None:
        self.schema_name = schema_name
        self.message, self.run_id, self.conversation_id = message, run_id, conversation_id

    def context(self) -> dict[str, Any]:
        try:
            parsed = json.loads(self.message)
        except ValueError:
            parsed = None
        fields = parsed if isinstance(parsed, dict) else {}
        return {
            "input": {**fields, "message": self.message},
            "conversation_id": self.conversation_id,
            "run_id": self.run_id,
        }

    async def __call__(self, template: str, body: Callable[[], Awaitable[T]]) -> T:
        from django.conf import settings

        from cadence_site.aredis import async_redis
        from cadence_site.errors import ApplicationError

        try:
            key = lock_key(template, self.context())
        except (KeyError, ValueError) as exc:
            raise ApplicationError(
                f"The exclusive section's key cannot be made: {exc.args[0]}.", "lock_key_invalid"
            ) from None
        client = async_redis(settings.REDIS_URL)
        lock = RedisLock(
            client,
            schema_name=self.schema_name,
            key=key,
            lease_seconds=float(getattr(settings, "CADENCE_LOCK_LEASE_SECONDS", 10)),
        )

        async def guarded(lease: Lease) -> T:
            token = section_lease.set(lease)
            try:
                return await body()
            finally:
                section_lease.reset(token)

        try:
            return await lock.run_exclusive(
                guarded, wait=float(getattr(settings, "CADENCE_LOCK_WAIT_SECONDS", 30))
            )
        except LockLostError as exc:
            raise ApplicationError(
                f"The step lost its lock on {key!r} and was stopped.", "lock_lost", status=409
            ) from exc
        except LockTimeout as exc:
            raise ApplicationError(str(exc), "lock_timeout", status=503) from exc
        finally:
            await client.aclose()
