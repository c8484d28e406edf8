"""The run list's text search (`q`): the runs whose error, steps' names or errors, or log lines
contain a text, in any case (Django's icontains: `UPPER(column) LIKE UPPER(pattern)`).

The list pages runs newest first, and no text index knows a run's time: the trigram indexes
(engine/migrations/0006, 0010) find steps and log lines, and each found step costs a read of
its row and a lookup of its run. Left to the planner in one query, the plan depended on its
guess of how many steps carry the text, and that guess flipped with each ANALYZE (for a step
name 3,000 runs carry it guessed 1): walking the newest runs with a probe each is right for
frequent text and ruinous for rare text, and the other way round. So the search decides on
counts, not guesses, in two steps:

1. `matching_run_ids`: the ids of the runs that carry the text, gathered from each place it can
   be, up to MAX_MATCHES. Step names are few per organization (note, tool and model names), so
   they are listed by skipping through the (name, run_id) index (engine/migrations/0011), and
   the steps of the names that contain the text are read from that index alone; past MAX_NAMES
   distinct names the trigram index on names is used instead.
2. The list's usual query, restricted to those ids (`id = ANY(array)`): the planner knows the
   exact number of ids and chooses between looking each run up and walking the newest runs
   with a hash test. Every other filter, the cursor and the privacy rule apply as without `q`.

More than MAX_MATCHES ids means the text is frequent: the list then walks the newest runs and
probes each (selectors.run_list), which finds a page of frequent text quickly. Either way the
result is exact: the cap chooses the plan, never which runs are found.
"""

from __future__ import annotations

from django.db import connection

from engine.models import Run, RunEvent, RunLog

MAX_NAMES = 500  # distinct step names listed through the index before the trigram index
MAX_MATCHES = 5000  # run ids gathered before the text counts as frequent

# Identifiers are the models' fixed table names; the text is a parameter (escaped for LIKE).
RUNS, STEPS, LINES = Run._meta.db_table, RunEvent._meta.db_table, RunLog._meta.db_table
_MATCHES = f"""
WITH RECURSIVE names(n) AS (
    (SELECT name FROM {STEPS} ORDER BY name LIMIT 1)
    UNION ALL
    SELECT (SELECT s.name FROM {STEPS} s WHERE s.name > names.n ORDER BY s.name LIMIT 1)
    FROM names WHERE names.n IS NOT NULL
),
listed AS MATERIALIZED (SELECT n FROM names WHERE n IS NOT NULL LIMIT %(max_names)s + 1),
few AS (SELECT count(*) <= %(max_names)s AS ok FROM listed),
found AS MATERIALIZED (
    -- ORDER BY the index's columns: the steps of one name come from the index alone, never
    -- from a scan of the table that the planner might prefer for a name it thinks common.
    SELECT hit.run_id FROM listed
    CROSS JOIN LATERAL (
        SELECT s.run_id FROM {STEPS} s WHERE s.name = listed.n
        ORDER BY s.name, s.run_id LIMIT %(cap)s + 1
    ) hit
    WHERE UPPER(listed.n::text) LIKE UPPER(%(pattern)s) AND (SELECT ok FROM few)
    UNION ALL
    SELECT run_id FROM {STEPS}
    WHERE UPPER(name::text) LIKE UPPER(%(pattern)s) AND NOT (SELECT ok FROM few)
    UNION ALL
    SELECT id FROM {RUNS} WHERE UPPER(error) LIKE UPPER(%(pattern)s)
    UNION ALL
    SELECT run_id FROM {STEPS} WHERE UPPER(error) LIKE UPPER(%(pattern)s)
    UNION ALL
    SELECT run_id FROM {LINES} WHERE UPPER(message) LIKE UPPER(%(pattern)s)
    LIMIT %(cap)s + 1
)
-- The list of ids (sorted to drop repeats) only when it will be used.
SELECT n, CASE WHEN n <= %(cap)s THEN (SELECT string_agg(DISTINCT run_id::text, ',') FROM found) END
FROM (SELECT count(*) AS n FROM found) counted
"""


def like_pattern(text: str) -> str:
    """`%text%` with LIKE's wildcards in the text escaped, as Django's icontains does."""
    return f"%{connection.ops.prep_for_like_query(text)}%"


def matching_run_ids(text: str) -> str | None:
    """The ids of the runs (of the current schema, visible or not) that carry `text`, as a
    PostgreSQL array literal for `id = ANY(%s::uuid[])` (one parameter, built by the server:
    no Python object per id), or None when more than MAX_MATCHES places carry it. Each run is
    listed once, however many places carry the text: the planner reads the array's length as
    the number of runs (duplicates made it expect twice the runs and walk twice as far)."""
    with connection.cursor() as cursor:
        cursor.execute(
            _MATCHES,
            {"pattern": like_pattern(text), "cap": MAX_MATCHES, "max_names": MAX_NAMES},
        )
        count, ids = cursor.fetchone()
    if count > MAX_MATCHES:
        return None
    return "{" + (ids or "") + "}"
