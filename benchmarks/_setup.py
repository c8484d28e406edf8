"""Shared by the Django benchmarks: a throwaway database on the configured server, migrated."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def use_scratch_database(name: str) -> str:
    """Point DATABASE_URL at a fresh database `name` on the same server; returns the original URL."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cadence_site.settings")
    import environ
    import psycopg

    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        from cadence_site import embedded

        urls = embedded.discover(ROOT / "var") or embedded.ensure(ROOT / "var")
        for key, value in urls.items():
            os.environ.setdefault(key, value)
    original = os.environ["DATABASE_URL"]
    config = environ.Env.db_url_config(original)
    conninfo = {
        "dbname": "postgres",
        "user": config.get("USER") or None,
        "password": config.get("PASSWORD") or None,
        "host": config.get("HOST") or None,
        "port": config.get("PORT") or None,
    }
    with psycopg.connect(**{k: v for k, v in conninfo.items() if v}, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, tail = original.rpartition("/")
    query = ("?" + tail.split("?", 1)[1]) if "?" in tail else ""
    os.environ["DATABASE_URL"] = f"{base}/{name}{query}"
    return original


def drop_scratch_database(original_url: str, name: str) -> None:
    import environ
    import psycopg
    from django.db import connections

    connections.close_all()
    config = environ.Env.db_url_config(original_url)
    conninfo = {
        "dbname": "postgres",
        "user": config.get("USER") or None,
        "password": config.get("PASSWORD") or None,
        "host": config.get("HOST") or None,
        "port": config.get("PORT") or None,
    }
    with psycopg.connect(**{k: v for k, v in conninfo.items() if v}, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]
