"""The held transport (cadence_site/socketwrites.py) over a real socket pair on the running loop:
what is written in one loop turn reaches the socket in one write, in order; close sends what
is held first; nothing is written once the connection closes."""

from __future__ import annotations

import asyncio
import socket

from cadence_site.socketwrites import HeldWrites


class _Counting(asyncio.Protocol):
    """The client side's protocol: it only receives (the test reads the server's writes)."""


async def _pair():
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    transport, _ = await loop.create_connection(_Counting, sock=ours)
    writes: list[bytes] = []
    real_write = transport.write

    def write(data: bytes) -> None:  # the real write, counted
        writes.append(bytes(data))
        real_write(data)

    transport.write = write
    theirs.setblocking(False)
    return loop, transport, theirs, writes


async def _received(peer: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    out = b""
    while len(out) < size:
        out += await asyncio.wait_for(loop.sock_recv(peer, 65536), 5)
    return out


async def test_one_write_per_loop_turn_in_order():
    loop, transport, peer, writes = await _pair()
    held = HeldWrites(transport, loop)
    try:
        for n in range(10):
            held.write(b"frame-%d;" % n)
        assert writes == []  # nothing before the turn ends
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert writes == [b"".join(b"frame-%d;" % n for n in range(10))]
        held.write(b"next;")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert writes[1:] == [b"next;"]
        expected = b"".join(b"frame-%d;" % n for n in range(10)) + b"next;"
        assert await _received(peer, len(expected)) == expected
    finally:
        transport.close()
        peer.close()


async def test_close_sends_what_is_held_first():
    loop, transport, peer, writes = await _pair()
    held = HeldWrites(transport, loop)
    try:
        held.write(b"last frame")
        held.close()
        assert writes == [b"last frame"]
        assert transport.is_closing()
        assert held.is_closing()  # the rest of the transport's interface is the real one's
        assert await _received(peer, 10) == b"last frame"
    finally:
        peer.close()


async def test_nothing_written_once_closing():
    loop, transport, peer, writes = await _pair()
    held = HeldWrites(transport, loop)
    try:
        held.write(b"too late")
        assert held.get_write_buffer_size() == len(b"too late")
        transport.close()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert writes == []
        held.abort()
        assert held.get_write_buffer_size() == 0
    finally:
        peer.close()
