"""Resource limits of a remoting server, and a log limiter so hostile peers cannot flood the log.

A server bounds what its peers can make it hold:

- ``max_connections``: connections over it are closed as soon as they are accepted;
- ``max_pending_frame_bytes``: the largest frame a peer may declare; a connection buffers only the bytes that
  arrived, never the declared size;
- ``buffer_budget_bytes``: all connections' buffered incomplete-frame bytes together; the connection whose
  bytes would take the total over it is **closed** (not paused: a paused peer would keep its share forever);
- ``incomplete_frame_timeout_s``: a connection holding an incomplete frame that long is closed;
- ``idle_timeout_s``: a connection with no bytes in either direction that long is closed (RocketMQ's
  ``serverChannelMaxIdleTimeSeconds``, 120 s);
- ``write_high_water_bytes``: above it a connection stops reading requests until its peer has read replies;
- ``max_requests_in_flight``: a connection with that many requests answered later (long polls, waits for a
  flush or a slave) stops reading requests until one of them is answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from krocket.common.errors import ConfigError

MIB = 1024 * 1024
DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_MAX_PENDING_FRAME_BYTES = 16 * MIB
DEFAULT_BUFFER_BUDGET_BYTES = 256 * MIB
DEFAULT_INCOMPLETE_FRAME_TIMEOUT_S = 30.0
DEFAULT_IDLE_TIMEOUT_S = 120.0
DEFAULT_WRITE_HIGH_WATER_BYTES = 4 * MIB
DEFAULT_MAX_REQUESTS_IN_FLIGHT = 4096


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_pending_frame_bytes: int = DEFAULT_MAX_PENDING_FRAME_BYTES
    buffer_budget_bytes: int = DEFAULT_BUFFER_BUDGET_BYTES
    incomplete_frame_timeout_s: float = DEFAULT_INCOMPLETE_FRAME_TIMEOUT_S
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    write_high_water_bytes: int = DEFAULT_WRITE_HIGH_WATER_BYTES
    max_requests_in_flight: int = DEFAULT_MAX_REQUESTS_IN_FLIGHT

    def __post_init__(self) -> None:
        positive = ("max_connections", "max_pending_frame_bytes", "buffer_budget_bytes", "write_high_water_bytes")
        for name in (*positive, "max_requests_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("incomplete_frame_timeout_s", "idle_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {getattr(self, name)}")

    @classmethod
    def from_settings(cls, settings: Sequence[tuple[str, int]]) -> ConnectionLimits:
        """The limits as a broker config or the name server's flags give them: (name, value) pairs of the
        connections, the pending frame bytes, the buffer budget bytes and the incomplete-frame and idle timeouts
        in ms, in that order; ``ConfigError`` naming the setting (as the user wrote it) that is not positive."""
        for name, value in settings:
            if value < 1:
                raise ConfigError(f"{name} must be positive, got {value}")
        (_, connections), (_, pending), (_, budget), (_, incomplete_ms), (_, idle_ms) = settings
        return cls(
            max_connections=connections,
            max_pending_frame_bytes=pending,
            buffer_budget_bytes=budget,
            incomplete_frame_timeout_s=incomplete_ms / 1000.0,
            idle_timeout_s=idle_ms / 1000.0,
        )

    @property
    def sweep_interval_s(self) -> float:
        """How often the timeouts are checked: often enough to close within about a quarter of the shorter."""
        return max(0.05, min(1.0, self.incomplete_frame_timeout_s / 4, self.idle_timeout_s / 4))


class BufferBudget:
    """Bytes of incomplete frames buffered by all connections of one server."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, delta: int) -> bool:
        """Account ``delta`` more (or fewer) bytes; False when a growth takes the total over the limit (the
        bytes are accounted all the same: the caller releases them when it drops the connection)."""
        self.used += delta
        return delta <= 0 or self.used <= self.limit


class LogLimiter:
    """At most one line per kind per period; the next line of that kind says how many were suppressed."""

    def __init__(self, logger: logging.Logger, period_s: float = 10.0) -> None:
        self._log = logger
        self.period_s = period_s
        self._last: dict[object, float] = {}
        self._suppressed: dict[object, int] = {}

    def log(self, level: int, kind: object, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.period_s:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            msg += " (%d more like it in the last %.0fs not logged)"
            args = (*args, suppressed, self.period_s)
        self._log.log(level, msg, *args, exc_info=exc_info)

    def warning(self, kind: object, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, kind, msg, *args)

    def exception(self, kind: object, msg: str, *args: Any) -> None:
        self.log(logging.ERROR, kind, msg, *args, exc_info=True)
