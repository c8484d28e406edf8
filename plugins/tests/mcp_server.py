"""A real MCP server over Streamable HTTP for the tests: `python -m plugins.tests.mcp_server PORT [extra]`.

Serves `add`, `echo` and `secret_admin` (the last one never allowed by the tests); with `extra`
it also serves `drop_tables`, so a test can change the tool list between two runs. Requests must
carry `Authorization: Bearer mcp-token` (the organization's credential), or get 401.
"""

from __future__ import annotations

import sys
import time

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import JSONResponse

TOKEN = "mcp-token"


def build(extra: bool):
    server = MCPServer("cadence-test")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def echo(text: str, delay_ms: int = 0) -> str:
        """Echo a text back, optionally after a delay."""
        if delay_ms:
            time.sleep(delay_ms / 1000)
        return text

    @server.tool()
    def secret_admin() -> str:
        """Never allowed."""
        return "root"

    if extra:

        @server.tool()
        def drop_tables() -> str:
            """A tool added later."""
            return "dropped"

    app = server.streamable_http_app()

    class RequireToken(BaseHTTPMiddleware):
        async def dispatch(self, request, call_next):
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return JSONResponse({"error": "unauthorized"}, status_code=401)
            return await call_next(request)

    app.add_middleware(RequireToken)
    return app


if __name__ == "__main__":
    port = int(sys.argv[1])
    uvicorn.run(build("extra" in sys.argv[2:]), host="127.0.0.1", port=port, log_level="warning")
