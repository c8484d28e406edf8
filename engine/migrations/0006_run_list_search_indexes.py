"""Indexes for the run list at a million runs (benchmarks/run_list.py).

- `run_slug_recent`: the orchestrator filter by slug (runs keep their slug when the orchestrator
  is deleted) walks its runs newest first, like the other filters.
- `run_duration`: `slower_than_ms` with a high threshold matches few runs; without it the list
  reads the whole table to fill a page.
- Trigram GIN indexes for `q` on the run's error and its steps' names and errors, on
  UPPER(column) because Django's icontains compares `UPPER(col::text) LIKE UPPER(pattern)`;
  errors only where there is one (partial: most rows have none). They need pg_trgm, a trusted
  extension that PostgreSQL ships; it is created in `public`, once per database, never in a
  tenant schema: created there, dropping that organization's schema would drop every other
  organization's search indexes with it (CASCADE), and other schemas would not see the operator
  class. Where the server lacks pg_trgm (the embedded server has plpgsql and pgvector only)
  the trigram indexes are skipped and `q` still works, reading more rows.

Built CONCURRENTLY (a non-atomic migration): a live organization keeps recording runs while
its indexes are built. A build that failed half-way leaves an invalid index; it is dropped and
built again on the next migrate.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

TRIGRAM_INDEXES = {
    "run_error_trgm": "engine_run USING gin (UPPER(error) gin_trgm_ops) WHERE error <> ''",
    "runevent_name_trgm": "engine_runevent USING gin (UPPER(name::text) gin_trgm_ops)",
    "runevent_error_trgm": (
        "engine_runevent USING gin (UPPER(error) gin_trgm_ops) WHERE error <> ''"
    ),
}


def _trigram_available(cursor) -> bool:
    cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
    if cursor.fetchone() is None:
        return False
    cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
    # Already there from elsewhere (another schema than public): usable only if on the path.
    cursor.execute(
        "SELECT 1 FROM pg_opclass WHERE opcname = 'gin_trgm_ops' AND pg_opclass_is_visible(oid)"
    )
    return cursor.fetchone() is not None


def _invalid(cursor, name: str) -> bool:
    cursor.execute(
        "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = %s "
        "AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())",
        [name],
    )
    row = cursor.fetchone()
    return bool(row and row[0])


def create_trigram_indexes(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        if not _trigram_available(cursor):
            return
        for name, definition in TRIGRAM_INDEXES.items():
            if _invalid(cursor, name):
                cursor.execute(f'DROP INDEX CONCURRENTLY "{name}"')
            cursor.execute(f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}" ON {definition}')


def drop_trigram_indexes(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for name in TRIGRAM_INDEXES:
            cursor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("engine", "0005_run_replay_of"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="run",
            index=models.Index(
                fields=["orchestrator_slug", "-started_at", "-id"], name="run_slug_recent"
            ),
        ),
        AddIndexConcurrently(
            model_name="run",
            index=models.Index(fields=["duration_ms"], name="run_duration"),
        ),
        migrations.RunPython(create_trigram_indexes, drop_trigram_indexes, elidable=False),
    ]
