"""Fixtures for the orchestrator tests: a local server speaking the OpenAI API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrators.tests.openai_server import FakeOpenAIServer


@pytest.fixture(scope="session")
def _openai_server_process() -> Iterator[FakeOpenAIServer]:
    # One listening thread for the whole session; each test gets it with an empty script.
    server = FakeOpenAIServer().start()
    yield server
    server.stop()


@pytest.fixture
def openai_server(_openai_server_process: FakeOpenAIServer, settings) -> Iterator[FakeOpenAIServer]:
    """The fake OpenAI server, script and recorded requests reset, and its host allowed by egress.

    Only its exact host (127.0.0.1) is allowed, not every private address: tests of the egress
    policy can use this fixture and still see ``localhost`` or 10.x refused.
    """
    server = _openai_server_process
    server.reset()
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = [
        *settings.CADENCE_EGRESS_ALLOWED_HOSTS,
        server.host,
    ]
    yield server
    server.reset()
