"""The Django side of runs (not the engine library): the turn pipeline, run recording, and the
services, selectors, APIs and consumers built on them.

Everything under `engine/runs/` (and `engine/models.py`, `engine/admin.py`, `engine/apps.py`,
`engine/migrations/`) belongs to the project and may import Django; every other module of the
`engine` package is the library and imports none (engine/tests/test_integrations.py checks it).
`import engine` never imports this package.
"""
