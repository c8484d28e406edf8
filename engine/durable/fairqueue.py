"""Fair dispatch of queued runs across organizations, in Redis.

Each organization's pending run ids wait in their own list; a ring lists the organizations that
have work. A Celery message carries no run: it is a token that says "take the next run of this
queue", and `pop` serves the organizations of the ring in turn (round robin), so a burst of
10,000 runs from one organization delays another organization's next run by at most one run per
organization ahead of it in the ring, not by 10,000.

An organization with workers of its own (its data stays on its machines) has its own queue
(`CADENCE_ORG_QUEUES = {"slug": "queue-name"}`): its tokens go to that Celery queue and its runs
to that queue's ring, which only its workers (`celery worker -Q queue-name`) pop.

Redis only speeds this up: the database's QueuedRun rows are the record. `requeue_lost` puts back
any queued run whose id Redis lost (a restart without persistence).
"""

from __future__ import annotations

from django.conf import settings

SHARED_QUEUE = "runs"

_POP = """
local n = redis.call('LLEN', KEYS[1])
for _ = 1, n do
  local org = redis.call('LMOVE', KEYS[1], KEYS[1], 'LEFT', 'RIGHT')
  if not org then return false end
  local id = redis.call('LPOP', ARGV[1] .. org)
  if id then
    if redis.call('LLEN', ARGV[1] .. org) == 0 then redis.call('LREM', KEYS[1], 0, org) end
    return {org, id}
  end
  redis.call('LREM', KEYS[1], 0, org)
end
return false
"""
_PUSH = """
redis.call('RPUSH', KEYS[2], ARGV[2])
if redis.call('LPOS', KEYS[1], ARGV[1]) == false then redis.call('RPUSH', KEYS[1], ARGV[1]) end
return 1
"""


def queue_for(org_slug: str) -> str:
    return getattr(settings, "CADENCE_ORG_QUEUES", {}).get(org_slug, SHARED_QUEUE)


def _ring(queue: str) -> str:
    return f"cadence:runq:{queue}:ring"


def _prefix(queue: str) -> str:
    return f"cadence:runq:{queue}:org:"


def push(client, *, queue: str, schema_name: str, run_id: str) -> None:
    client.eval(_PUSH, 2, _ring(queue), _prefix(queue) + schema_name, schema_name, run_id)


def pop(client, *, queue: str) -> tuple[str, str] | None:
    """The next (schema name, run id) of `queue`, organizations in turn; None when empty."""
    found = client.eval(_POP, 1, _ring(queue), _prefix(queue))
    if not found:
        return None
    return found[0].decode(), found[1].decode()


def pending(client, *, queue: str, schema_name: str) -> list[str]:
    return [v.decode() for v in client.lrange(_prefix(queue) + schema_name, 0, -1)]
