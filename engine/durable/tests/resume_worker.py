"""A worker process of the resume and lock tests: runs one queued run (to be killed, or raced).

python -m engine.durable.tests.resume_worker <schema> <run id> [<redis key to wait for>]

With a key, the worker says it is set up (pushes to `<key>:ready`) and waits for the key's go.
"""

from __future__ import annotations

import os
import sys

import django

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cadence_site.settings")
    django.setup()
    from engine.durable.tasks import run_one

    if len(sys.argv) > 3:  # start together with the other racers
        import redis

        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        client.rpush(f"{sys.argv[3]}:ready", "ready")
        client.blpop([sys.argv[3]], timeout=60)
    run_one(schema_name=sys.argv[1], run_id=sys.argv[2])
