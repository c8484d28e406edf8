"""The server's own log lines (access, WebSocket handshakes) never carry a ticket or a key."""

from __future__ import annotations

import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from cadence_site.testing import start_live_server, test_database_url


@pytest.fixture
def logged_server(world, committed_db, tmp_path):
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        server = start_live_server(test_database_url(), log_level="info", output=output)
        try:
            yield server, log
        finally:
            server.stop()


def test_query_strings_and_keys_never_reach_the_server_log(world, logged_server):
    server, log = logged_server
    ws_url = server.url.replace("http://", "ws://")

    with urllib.request.urlopen(f"{server.url}/healthz?ticket=SECRET-HTTP-TICKET", timeout=5):
        pass
    with connect(f"{ws_url}/ws/orgs/alpha/audit/?ticket=SECRET-WS-TICKET", open_timeout=5) as ws:
        with pytest.raises(ConnectionClosed):  # refused: an unknown ticket closes with 4401
            ws.recv(timeout=5)
        assert ws.close_code == 4401
    key = world.alpha.keys["admin"]
    with connect(
        f"{ws_url}/ws/orgs/alpha/audit/?api_key={key}",
        additional_headers={"Authorization": f"Bearer {key}"},
        open_timeout=5,
    ) as ws:
        ws.send('{"type": "audit.list", "limit": 1}')
        assert '"audit.events"' in ws.recv(timeout=5)
    server.stop()

    text = log.read_text()
    assert "GET /healthz" in text and "/ws/orgs/alpha/audit/" in text
    for secret in ("SECRET-HTTP-TICKET", "SECRET-WS-TICKET", key, key[3:]):
        assert secret not in text
