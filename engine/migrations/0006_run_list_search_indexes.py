"""Indexes for the run list at a million runs (benchmarks/run_list.py).

- `run_slug_recent`: the orchestrator filter by slug (runs keep their slug when the orchestrator
  is deleted) walks its runs newest first, like the other filters.
- `run_duration`: `slower_than_ms` with a high threshold matches few runs; without it the list
  reads the whole table to fill a page. Durations have a long tail: with the default 100
  histogram buckets PostgreSQL guessed 8,245 runs over 20 s where there were 508 (of 1 M) and
  walked 113,000 runs; 1,000 buckets (`SET STATISTICS`, kept by the template's DDL) let it see
  the tail.
- Trigram GIN indexes for `q` on the run's error and its steps' names and errors, on
  UPPER(column) because Django's icontains compares `UPPER(col::text) LIKE UPPER(pattern)`.
  Not partial: an empty error has no trigrams and costs the index next to nothing, and the
  planner reads statistics only from a whole index's expression. (Partial ones, with the
  `error <> ''` they need in the query, made it multiply two dependent selectivities, guess
  2,000 runs for an error text 20,000 runs carry, and read all 20,000 (170 ms) instead of
  walking the newest runs (2 ms).) They need pg_trgm, a trusted
  extension that PostgreSQL ships; it is created in `public`, once per database, never in a
  tenant schema: created there, dropping that organization's schema would drop every other
  organization's search indexes with it (CASCADE), and other schemas would not see the operator
  class. Where the server lacks pg_trgm (the embedded server has plpgsql and pgvector only)
  the trigram indexes are skipped and `q` still works, reading more rows.
- No parallel scans of engine_run (`parallel_workers = 0`): a list page reads at most a few
  hundred thousand index entries; on a busy 2-core machine the planner's parallel plan for a
  member's three-filter page took 394 ms where the same walk alone took 50 ms, and OLTP pages
  should not take workers from other requests. Kept by the template's DDL (a table option).

Built CONCURRENTLY where the migration runs outside a transaction (`migrate` on a live
database: the organization keeps recording runs meanwhile); provisioning's fallback migrates a
new, empty schema inside its transaction, where they are built plainly. A concurrent build that
failed half-way leaves an invalid index: it is dropped and built again on the next migrate.
"""

from django.db import migrations, models

STATISTICS = 1000  # histogram buckets for engine_run.duration_ms
BTREE_INDEXES = {  # as Django writes the model's indexes (engine/models.py Run.Meta)
    "run_slug_recent": 'engine_run ("orchestrator_slug", "started_at" DESC, "id" DESC)',
    "run_duration": 'engine_run ("duration_ms")',
}
TRIGRAM_INDEXES = {
    "run_error_trgm": "engine_run USING gin (UPPER(error) gin_trgm_ops)",
    "runevent_name_trgm": "engine_runevent USING gin (UPPER(name::text) gin_trgm_ops)",
    "runevent_error_trgm": "engine_runevent USING gin (UPPER(error) gin_trgm_ops)",
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


def _concurrently(schema_editor) -> str:
    return "" if schema_editor.connection.in_atomic_block else "CONCURRENTLY "


def create_indexes(apps, schema_editor):
    how = _concurrently(schema_editor)
    with schema_editor.connection.cursor() as cursor:
        wanted = dict(BTREE_INDEXES)
        if _trigram_available(cursor):
            wanted.update(TRIGRAM_INDEXES)
        for name, definition in wanted.items():
            if _invalid(cursor, name):
                cursor.execute(f'DROP INDEX {how}"{name}"')
            cursor.execute(f'CREATE INDEX {how}IF NOT EXISTS "{name}" ON {definition}')
        cursor.execute(
            f"ALTER TABLE engine_run ALTER COLUMN duration_ms SET STATISTICS {STATISTICS}"
        )
        cursor.execute("ALTER TABLE engine_run SET (parallel_workers = 0)")


def drop_indexes(apps, schema_editor):
    how = _concurrently(schema_editor)
    with schema_editor.connection.cursor() as cursor:
        for name in [*BTREE_INDEXES, *TRIGRAM_INDEXES]:
            cursor.execute(f'DROP INDEX {how}IF EXISTS "{name}"')
        cursor.execute("ALTER TABLE engine_run ALTER COLUMN duration_ms SET STATISTICS -1")
        cursor.execute("ALTER TABLE engine_run RESET (parallel_workers)")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("engine", "0005_run_replay_of"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(
                    model_name="run",
                    index=models.Index(
                        fields=["orchestrator_slug", "-started_at", "-id"],
                        name="run_slug_recent",
                    ),
                ),
                migrations.AddIndex(
                    model_name="run",
                    index=models.Index(fields=["duration_ms"], name="run_duration"),
                ),
            ],
            database_operations=[
                migrations.RunPython(create_indexes, drop_indexes, elidable=False),
            ],
        ),
    ]
