"""A btree index on steps' (name, run_id) for the run list's `q` (engine/runs/search.py).

Step names are few per organization (note, tool and model names: the bench's million runs
carry 17), so `q` lists the distinct names by skipping through this index (about 4 index pages
per name), keeps those that contain the text, and reads their steps' run ids from the index
alone, never from the table. Through the trigram index (0006) every matching step cost a read
of the table: a name that 3,000 runs carry cost ~2,800 heap pages and most of the page's time
(benchmarks/run_list.py). The trigram index stays: it serves step names when an organization
has more distinct names than the search lists (search.MAX_NAMES), and steps' errors.

Built CONCURRENTLY outside a transaction, as 0006 explains; a failed concurrent build's invalid
index is dropped and built again on the next migrate.
"""

import importlib

from django.db import migrations, models

_search = importlib.import_module("engine.migrations.0006_run_list_search_indexes")

NAME = "runevent_name_run"
DEFINITION = 'engine_runevent ("name", "run_id")'


def create_index(apps, schema_editor):
    how = _search._concurrently(schema_editor)
    with schema_editor.connection.cursor() as cursor:
        if _search._invalid(cursor, NAME):
            cursor.execute(f'DROP INDEX {how}"{NAME}"')
        cursor.execute(f'CREATE INDEX {how}IF NOT EXISTS "{NAME}" ON {DEFINITION}')


def drop_index(apps, schema_editor):
    how = _search._concurrently(schema_editor)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f'DROP INDEX {how}IF EXISTS "{NAME}"')


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("engine", "0010_runlog_message_trigram"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(
                    model_name="runevent",
                    index=models.Index(fields=["name", "run"], name=NAME),
                ),
            ],
            database_operations=[
                migrations.RunPython(create_index, drop_index, elidable=False),
            ],
        ),
    ]
