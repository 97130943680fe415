"""Messages pulled from one queue and not yet consumed: flow-control counters and the offset to commit."""

from __future__ import annotations

import time

from krocket.common.message import MessageExt


class ProcessQueue:
    """RocketMQ's ProcessQueue: messages by queue offset; the commit point is the smallest still held.

    Completions may come out of order; the offset to commit never passes a message that is still being
    consumed, so a crash re-delivers it (at-least-once).
    """

    def __init__(self) -> None:
        self._msgs: dict[int, MessageExt] = {}
        self._max_offset = -1
        self.bytes = 0
        self.dropped = False
        self.last_pull = time.monotonic()

    @property
    def count(self) -> int:
        return len(self._msgs)

    @property
    def max_span(self) -> int:
        """Distance between the first and last offsets held (RocketMQ's consumeConcurrentlyMaxSpan)."""
        return self._max_offset - min(self._msgs) if self._msgs else 0

    def put(self, messages: list[MessageExt]) -> None:
        for msg in messages:
            if msg.queue_offset not in self._msgs:
                self._msgs[msg.queue_offset] = msg
                self.bytes += len(msg.body)
            self._max_offset = max(self._max_offset, msg.queue_offset)

    def remove(self, messages: list[MessageExt]) -> int:
        """Forget consumed messages; return the offset to commit, or -1 when nothing was held."""
        if not self._msgs:
            return -1
        for msg in messages:
            if self._msgs.pop(msg.queue_offset, None) is not None:
                self.bytes -= len(msg.body)
        return min(self._msgs) if self._msgs else self._max_offset + 1

    def held(self) -> list[MessageExt]:
        return [self._msgs[o] for o in sorted(self._msgs)]
