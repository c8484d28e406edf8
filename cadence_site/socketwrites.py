"""WebSocket output written to the socket once per event-loop turn, not once per message.

uvicorn's WebSocket protocol (websockets-sansio, what `--ws auto` picks with websockets
installed) writes every ASGI `websocket.send` with its own `transport.write`, and uvloop's write
makes a send(2) at once whenever nothing is buffered. A run socket relays a stream entry of
several frames (a step's end, the next notes', the next step's start) as several sends in a row:
one system call each, which on loopback also does the receiving side's TCP work. At 50 watched
runs that was ~7% of the server's CPU (benchmarks/run_ingest.py, py-spy); one write of ten
frames costs about what one write of one does.

Here the protocol's transport holds what is written and hands it to the real transport in one
write at the end of the current loop turn (`call_soon`): the same bytes in the same order, only
fewer calls. Every write of the protocol goes through it (messages, pings and pongs, the close
frame), so nothing overtakes anything; `close` writes what is held first, `abort` drops it as
the real one drops its buffer, and a connection already closing gets nothing, as before. A
message's send still returns before its bytes reach the socket, as it did whenever the
transport's own buffer was not empty; flow control is unchanged (the real transport pauses the
protocol once its buffer passes the high-water mark, one turn later at most).
"""

from __future__ import annotations

import asyncio
from typing import Any


class HeldWrites:
    """A transport that writes what it is given once per loop turn, through `transport`."""

    __slots__ = ("transport", "loop", "held", "scheduled")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.held: list[bytes] = []
        self.scheduled = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.held.append(data)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def writelines(self, chunks) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        self.scheduled = False
        held = self.held
        if not held:
            return
        self.held = []
        if self.transport.is_closing():
            return  # lost or closed meanwhile: the real transport would not send it either
        self.transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self.held = []
        self.transport.abort()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + sum(map(len, self.held))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def install() -> bool:
    """Hold the writes of uvicorn's websockets-sansio protocol (once per process; False when
    that protocol is not there, e.g. under daphne)."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol as protocol,
        )
    except ImportError:
        return False
    if getattr(protocol, "_cadence_held_writes", False):
        return True
    original = protocol.connection_made

    def connection_made(self, transport) -> None:
        # Called on the loop, by the HTTP protocol handing the upgraded connection over.
        original(self, HeldWrites(transport, asyncio.get_running_loop()))

    protocol.connection_made = connection_made
    protocol._cadence_held_writes = True
    return True
