from __future__ import annotations

from chat.tests.conftest import chat_orchestrator  # noqa: F401
