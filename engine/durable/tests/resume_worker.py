"""A worker process of the resume tests (tests/test_resume.py): runs one queued run, to be killed."""

from __future__ import annotations

import os
import sys

import django

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cadence_site.settings")
    django.setup()
    from engine.durable.tasks import run_one

    run_one(schema_name=sys.argv[1], run_id=sys.argv[2])
