"""Message bodies of the bench: a fixed payload, and for e2e bodies stamped with their send time."""

from __future__ import annotations

import time
from collections.abc import Callable

STAMP_BYTES = 8  # e2e: the first bytes of a body carry time.time_ns() at send


def payload(size: int) -> bytes:
    """A fixed incompressible-looking body of ``size`` bytes (repeatable between runs)."""
    block = bytes((i * 131 + 7) & 0xFF for i in range(256))
    return (block * (size // 256 + 1))[:size]


def stamped(size: int) -> Callable[[], bytes]:
    """Bodies that start with the send time (``time.time_ns()``) for end-to-end latency."""
    rest = payload(max(size - STAMP_BYTES, 0))

    def make() -> bytes:
        return time.time_ns().to_bytes(STAMP_BYTES, "big") + rest

    return make
