"""Web framework integrations: ``engine.integrations.fastapi``, ``.flask`` and ``.django``.

Each imports its framework only when imported itself; ``import engine`` never does.
"""
