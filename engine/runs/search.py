"""The run list's text search (`q`): the runs whose error, steps' names or errors, or log lines
contain a text, in any case (Django's icontains: `UPPER(column) LIKE UPPER(pattern)`).

The list pages runs newest first, and no text index knows a run's time: the trigram indexes
(engine/migrations/0006, 0010) find steps and log lines, and each found step costs a read of
its row and a lookup of its run. Left to the planner in one query, the plan depended on its
guess of how many steps carry the text, and that guess flipped with each ANALYZE (for a step
name 3,000 runs carry it guessed 1): walking the newest runs with a probe each is right for
frequent text and ruinous for rare text, and the other way round. So the search gathers the
matching runs first and decides on their count, not on a guess:

1. `found`: the ids of the runs that carry the text, gathered from each place it can be, up to
   MAX_MATCHES + 1. Step names are few per organization (note, tool and model names), so they
   are listed by skipping through the (name, run_id) index (engine/migrations/0011), and the
   steps of the names that contain the text are read from that index alone; past MAX_NAMES
   distinct names the trigram index on names is used instead.
2. `among_matches`: the list's usual query (every other filter, the cursor and the privacy
   rule) with `id = ANY(ARRAY(<found>))`, in the same statement. The array is computed by the
   server when the statement runs, so the planner cannot know its length and plans for a few
   ids: it looks each matching run up by primary key, applies the filters, and sorts what is
   left. That costs one lookup per matching run, at most MAX_MATCHES (about 2.5 µs each),
   whatever the filters, the caller and the statistics say. The former way (the ids sent back
   as an array constant, so that the planner saw their number) chose per case between those
   lookups and walking the newest runs with a hash test, and lost on both counts at a million
   runs: parsing and planning 3,000 constant uuids cost ~5 ms of server CPU before anything
   ran, and with a status filter the planner intersected the lookups with the status index
   (a bitmap of 100,000 failed runs, 8 ms) or, after some ANALYZE samples, walked those runs
   (60-90 ms; benchmarks/run_list.py).

More than MAX_MATCHES ids means the text is frequent: the array is then empty (the page too),
`is_frequent` says so, and the list walks the newest runs and probes each
(selectors.run_list), which finds a page of frequent text quickly. Either way the result is
exact: the cap chooses the plan, never which runs are found.
"""

from __future__ import annotations

import re

from django.db import connection
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL

from engine.models import Run, RunEvent, RunLog

MAX_NAMES = 500  # distinct step names listed through the index before the trigram index
MAX_MATCHES = 5000  # run ids gathered before the text counts as frequent

# Identifiers are the models' fixed table names; the text is a parameter (escaped for LIKE).
RUNS, STEPS, LINES = Run._meta.db_table, RunEvent._meta.db_table, RunLog._meta.db_table
_FOUND = f"""
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
"""
# The matching runs' ids, none when the text is frequent. Repeats (a run whose error and failing
# step both carry the text) are left in: a condition on the runs keeps each run once, and the
# primary key's index scan sorts the array and drops them before it looks anything up.
_AMONG = _FOUND + "SELECT run_id FROM found WHERE (SELECT count(*) FROM found) <= %(cap)s"
_COUNT = _FOUND + "SELECT count(*) FROM found"
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def like_pattern(text: str) -> str:
    """`%text%` with LIKE's wildcards in the text escaped, as Django's icontains does."""
    return f"%{connection.ops.prep_for_like_query(text)}%"


def _values(text: str) -> dict[str, object]:
    return {"pattern": like_pattern(text), "cap": MAX_MATCHES, "max_names": MAX_NAMES}


def among_matches(text: str) -> RawSQL:
    """A condition on the runs (of the current schema) that keeps those carrying `text`, when
    at most MAX_MATCHES places carry it; when more do, it keeps none (`is_frequent`)."""
    values = _values(text)
    # Positional parameters, as a condition inside an ORM query takes them.
    params = [values[name] for name in _PLACEHOLDER.findall(_AMONG)]
    sql = _PLACEHOLDER.sub("%s", _AMONG)
    return RawSQL(f'"{RUNS}"."id" = ANY(ARRAY({sql}))', tuple(params), output_field=BooleanField())


def is_frequent(text: str) -> bool:
    """Whether more than MAX_MATCHES places carry `text` (asked only when `among_matches`
    found nothing: then it is either rare and absent, or frequent)."""
    with connection.cursor() as cursor:
        cursor.execute(_COUNT, _values(text))
        return cursor.fetchone()[0] > MAX_MATCHES
