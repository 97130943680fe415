"""Sends mutated frames to a real server over a few connections and checks each got what it must.

A model decoder (the same ``FrameDecoder``) reads each connection's bytes as the server does, so the driver
knows what every frame must cause: a reply for each request it decodes (oneways and responses get none), a
close for a malformed frame; a frame left incomplete is followed by the driver's own end of stream, which
the server must answer by closing. A connection the server closes is reopened. Pulls are not waited for (a
mutated pull may long-poll); everything else must be answered within ``reply_timeout``.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from krocket.common.codes import RequestCode
from krocket.common.errors import FrameError
from krocket.common.remoting import FrameDecoder, RemotingCommand

from .mutations import mutated

MAX_FRAME = 16 * 1024 * 1024


@dataclass
class FuzzStats:
    frames: int = 0
    answered: int = 0
    closed_by_server: int = 0
    ended_incomplete: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


class _Link:
    """One connection and the model of what the server has decoded from it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.model = FrameDecoder(MAX_FRAME)
        self.replies = FrameDecoder(MAX_FRAME)
        self.seen: set[int] = set()
        self.eof = False

    async def read_until(self, done: object, timeout: float) -> None:
        """Read replies until ``done()`` or end of stream or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not done() and not self.eof:  # type: ignore[operator]
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                data = await asyncio.wait_for(self.reader.read(1 << 20), left)
            except TimeoutError:
                return
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                self.eof = True
                return
            self.seen.update(cmd.opaque for cmd in self.replies.feed(data))

    def close(self) -> None:
        self.writer.transport.abort()


async def fuzz_server(
    host: str,
    port: int,
    bases: list[RemotingCommand],
    frames: int,
    connections: int = 4,
    seed: int = 12,
    reply_timeout: float = 5.0,
) -> FuzzStats:
    stats = FuzzStats()
    start = time.monotonic()
    per_link = frames // connections

    async def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        link: _Link | None = None
        for n in range(per_link):
            if link is None or link.eof:
                if link is not None:
                    link.close()
                link = _Link(*await asyncio.open_connection(host, port))
            opaque = index * 10_000_000 + n + 1
            frame = mutated(rng, bases, opaque)
            stats.frames += 1
            try:
                decoded = link.model.feed(frame)
                malformed = False
            except FrameError:
                decoded, malformed = [], True
            expected = {
                c.opaque for c in decoded if not (c.is_response or c.is_oneway or c.code == RequestCode.PULL_MESSAGE)
            }
            try:
                link.writer.write(frame)
            except (ConnectionResetError, BrokenPipeError):
                link.eof = True
            pending = link.model.pending_bytes
            if pending and not malformed and not link.eof:
                link.writer.write_eof()
            await link.read_until(lambda: expected <= link.seen, reply_timeout)  # noqa: B023
            if expected <= link.seen:
                stats.answered += len(expected)
            elif not link.eof:
                stats.failures.append(f"no answer within {reply_timeout}s to {frame[:200]!r}")
            if malformed or pending:
                await link.read_until(lambda: False, reply_timeout)
                if not link.eof:
                    stats.failures.append(f"connection not closed after {frame[:200]!r}")
                link.eof = True
                stats.ended_incomplete += bool(pending and not malformed)
            if link.eof:
                stats.closed_by_server += 1
        if link is not None:
            link.close()

    await asyncio.gather(*(worker(i) for i in range(connections)))
    stats.seconds = time.monotonic() - start
    return stats
