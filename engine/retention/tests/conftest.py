from chat.tests.conftest import chat_orchestrator  # noqa: F401
