"""A log throttle: at most one warning per key per period, so a failing loop does not flood the log."""

from __future__ import annotations

import time


class LogThrottle:
    """Allow one log line per key per period."""

    def __init__(self, period: float = 10.0) -> None:
        self.period = period
        self._last: dict[object, float] = {}

    def __call__(self, key: object) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.period:
            self._last[key] = now
            return True
        return False
