"""One reader per process for every Redis stream its sockets follow (chat replies, audit feed).

Each open chat socket used to hold a Redis connection in a blocking XREAD; past the client's
connection limit (100) replies stopped reaching tabs. Here a single task per event loop reads all
followed streams in one XREAD and hands entries to each subscriber's unbounded queue, so a process
holds one blocking connection whatever its socket count, and no entry is dropped.

A stream subscribed while the read blocks joins it at once: the read also follows the hub's own
wake-up stream, which a new subscription writes to (one XADD), so that the read returns and the
next one includes the new stream. Without it a new socket waited for the block to end (up to
BLOCK_MS) before its first frame: a run watched from its start saw its first second of step
frames ~0.5-1 s late (benchmarks/run_ingest.py).

The read is sent as RESP bytes the hub keeps packed, each stream's key and position once, not
through the client's command packing: at 500 open chat sockets a read names 1,000 arguments,
and packing them again for every read (a busy hub reads every few milliseconds) was an eighth
of the server's CPU (py-spy, benchmarks/chat_load.py --ws-conversations 500). Only a position
that moved is packed again. The read holds one connection of the hub's own pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from django.conf import settings

from cadence_site.aredis import async_redis
from cadence_site.loops import LoopLocal

logger = logging.getLogger(__name__)

BLOCK_MS = 1000  # how long one read blocks (a new subscription wakes it: see the docstring)
# After a read that returned entries, the next waits this long, so that it takes what every
# stream got meanwhile in one round trip: a read returns as soon as one entry comes, and at 50
# watched runs that was a read (and a wake-up of the sockets) per entry. Entries reach their
# sockets at most this much later.
GATHER_SECONDS = 0.005
WAKE_TTL = 60  # seconds the wake-up stream outlives its last wake-up


def now_id() -> str:
    """A stream id for "from now on", when Redis can't say where the stream ends."""
    return f"{int(time.time() * 1000)}-0"


def _bulk(value: str) -> bytes:
    """`value` as a RESP bulk string."""
    data = value.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _read_head(streams: int) -> bytes:
    """XREAD COUNT 500 BLOCK <BLOCK_MS> STREAMS, for `streams` keys and as many ids."""
    words = [b"XREAD", b"COUNT", b"500", b"BLOCK", str(BLOCK_MS).encode(), b"STREAMS"]
    return b"*%d\r\n" % (len(words) + 2 * streams) + b"".join(
        b"$%d\r\n%s\r\n" % (len(word), word) for word in words
    )


def _entry_text(fields: list) -> str | None:
    """The `e` field of an entry's flat field list [name, value, ...] (None: it has none)."""
    for index in range(0, len(fields) - 1, 2):
        if fields[index] == b"e":
            return fields[index + 1].decode()
    return None


def _id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class StreamHub:
    def __init__(self) -> None:
        self.subscribers: dict[str, dict[asyncio.Queue, tuple[int, int]]] = {}
        self.positions: dict[str, str] = {}
        # Each followed stream's key and position as RESP bulk strings (see the docstring),
        # changed with `positions` by `_follow` alone.
        self.packed_keys: dict[str, bytes] = {}
        self.packed_ids: dict[str, bytes] = {}
        self.connection = None  # the read's own connection, taken from the hub's pool
        # Streams whose position moved while a read was in flight, with the position that read
        # was sent with (None: not in it): its entries start there, not at the new position.
        self.moved: dict[str, str | None] = {}
        self.task: asyncio.Task | None = None
        self.changed = asyncio.Event()
        # The wake-up stream: unique per hub, so that it starts empty and "0-0" is its position.
        self.wake_key = f"cadence:hub-wake:{uuid.uuid4().hex}"
        self.wake_position = "0-0"
        self.reading = False  # a read is blocked on the streams as they were when it began
        self.reads = 0  # reads begun; the one a wake-up was last sent for:
        self.woken = -1  # at most one per read, and every read that needs one gets it
        self.waking: set[asyncio.Task] = set()
        # Its own connection, without a read timeout shorter than the block.
        self.client = async_redis(
            settings.REDIS_URL, socket_timeout=BLOCK_MS / 1000 + 10, socket_connect_timeout=5
        )

    def subscribe(self, key: str, after: str | bytes) -> asyncio.Queue:
        """Entries of `key` written after stream id `after` ("0-0" for all), in order."""
        queue: asyncio.Queue = asyncio.Queue()
        self.subscribers.setdefault(key, {})[queue] = _id(after)
        if key not in self.positions or _id(after) < _id(self.positions[key]):
            self._follow(key, after)
            if self.reading and self.woken != self.reads:
                self.woken = self.reads
                task = asyncio.get_running_loop().create_task(self._wake())
                self.waking.add(task)
                task.add_done_callback(self.waking.discard)
        self.changed.set()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        return queue

    def _follow(self, key: str, position: str | bytes | None) -> None:
        """Read `key` from after `position` from the next read on; None: stop reading it."""
        if self.reading and key not in self.moved:
            self.moved[key] = self.positions.get(key)
        if position is None:
            self.positions.pop(key, None)
            self.packed_keys.pop(key, None)
            self.packed_ids.pop(key, None)
            return
        if isinstance(position, bytes):  # as Redis gave it (XREVRANGE, a stored id)
            position = position.decode()
        packed_id = _bulk(position)  # before anything changes: the three stay in step
        self.positions[key] = position
        if key not in self.packed_keys:
            self.packed_keys[key] = _bulk(key)
        self.packed_ids[key] = packed_id

    async def _wake(self) -> None:
        """End the blocked read, so that the next one follows the new positions."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.xadd(self.wake_key, {"w": "1"}, maxlen=1)
                pipe.expire(self.wake_key, WAKE_TTL)
                await pipe.execute()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the read ends within BLOCK_MS all the same
            logger.debug("stream reader wake-up failed", extra={"error": str(exc)})

    async def latest_id(self, key: str) -> str:
        """The id of the stream's newest entry ("0-0" when empty): follow from here, miss nothing."""
        latest = await self.client.xrevrange(key, count=1)
        if not latest:
            return "0-0"
        entry_id = latest[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else entry_id

    def unsubscribe(self, key: str, queue: asyncio.Queue) -> None:
        followers = self.subscribers.get(key)
        if followers is not None:
            followers.pop(queue, None)
            if not followers:
                del self.subscribers[key]
                self._follow(key, None)

    async def _read(self) -> list | None:
        """One blocking XREAD of every followed stream and the wake-up stream, as Redis answers
        it (RESP2: [[key, [[id, [field, value, ...]], ...]], ...], or None when it timed out)."""
        parts = [_read_head(len(self.packed_keys) + 1)]
        parts += self.packed_keys.values()
        parts.append(_bulk(self.wake_key))
        parts += self.packed_ids.values()
        parts.append(_bulk(self.wake_position))
        if self.connection is None:
            self.connection = await self.client.connection_pool.get_connection()
        connection = self.connection
        try:
            # One buffer: half the CPU of handing the socket a thousand small ones (measured).
            await connection.send_packed_command(b"".join(parts), check_health=False)
            return await connection.read_response()
        except BaseException:
            # Cancelled or failed mid-read: the connection may still owe the reply.
            self.connection = None
            await connection.disconnect(nowait=True)
            await self.client.connection_pool.release(connection)
            raise

    async def _run(self) -> None:
        try:
            await self._follow_all()
        finally:
            if self.connection is not None:
                connection, self.connection = self.connection, None
                await self.client.connection_pool.release(connection)

    async def _follow_all(self) -> None:
        while self.subscribers:
            self.changed.clear()
            self.moved.clear()
            # From here until the read returns, a new subscription wakes it: the read's command
            # is built before its first await, and a subscription made after that (while the
            # command is sent, or the read blocks) sends a wake-up the read returns on.
            self.reading = True
            self.reads += 1
            try:
                batches = await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "chat stream reader interrupted; retrying", extra={"error": str(exc)}
                )
                await asyncio.sleep(0.5)
                continue
            finally:
                self.reading = False
            if isinstance(batches, dict):  # a RESP3 connection answers with a map
                batches = list(batches.items())
            for raw_key, entries in batches or []:
                key = raw_key.decode()
                if key == self.wake_key:
                    self.wake_position = entries[-1][0].decode()
                    continue
                followers = self.subscribers.get(key, {})
                # A position moved during the read (a follower from an older position came, or
                # the last left and another came): these entries start where the read was sent
                # from, so a follower from before there gets nothing of them now (it would miss
                # the entries between) and the position stays where it was moved to.
                moved = key in self.moved
                sent_from = _id(self.moved[key] or "0-0") if moved else (0, 0)
                for entry_id, fields in entries:
                    position = _id(entry_id)
                    text = _entry_text(fields)
                    for queue, since in followers.items():
                        if position > since and since >= sent_from:
                            # A follower's own position moves with what it got: a later
                            # follower from an older position makes the read go back, and
                            # the others must not get those entries twice.
                            followers[queue] = position
                            if text is not None:
                                queue.put_nowait(text)
                if key in self.positions and not moved:
                    self._follow(key, entries[-1][0].decode())
            if batches:
                await asyncio.sleep(GATHER_SECONDS)


_hubs: LoopLocal[StreamHub] = LoopLocal(StreamHub)


def hub() -> StreamHub:
    return _hubs.get()


async def relay(key: str, after: str, send) -> None:
    """Hand each frame of each entry of `key` written after `after` to `send(text)`, in order,
    until cancelled. An entry holds one frame of JSON, or several written together, one per line
    (JSON text has no raw newline).

    A socket's reader task: `await send(text_data=...)` is the consumer's `send`."""
    queue = hub().subscribe(key, after)
    try:
        while True:
            for frame in (await queue.get()).split("\n"):
                await send(text_data=frame)
    finally:
        hub().unsubscribe(key, queue)
