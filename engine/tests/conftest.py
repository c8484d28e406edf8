from __future__ import annotations

import pytest

from engine.resilience import ManualClock, reset_circuit_breakers, set_default_clock


@pytest.fixture
def clock():
    """A manual clock installed as the default: nothing in the test sleeps for real."""
    manual = ManualClock()
    previous = set_default_clock(manual)
    yield manual
    set_default_clock(previous)


@pytest.fixture(autouse=True)
def _fresh_circuits():
    reset_circuit_breakers()
    yield
    reset_circuit_breakers()


@pytest.fixture(scope="session", autouse=True)
def _close_stray_connections():
    """Shadows the project's database-closing fixture: engine tests use no database, and must
    run with ``-p no:django`` before (or without) the Django settings."""
    yield
