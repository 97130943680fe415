"""``messageDelayLevel``: the delay of each level, parsed and validated ("1s 5s 10s 30s 1m ... 2h")."""

from __future__ import annotations

from dataclasses import dataclass

from krocket.common.errors import ConfigError

DEFAULT_DELAY_LEVELS = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_LEVELS = 1000  # RocketMQ has no limit; a queue per level, so keep the count sane


def parse_duration_ms(text: str) -> int:
    """``"5s"`` -> 5000. Units: ms, s, m, h, d; the number is a positive integer."""
    for unit in ("ms", "s", "m", "h", "d"):
        if text.endswith(unit):
            number = text[: -len(unit)]
            if number.isdigit() and int(number) > 0:
                return int(number) * UNIT_MS[unit]
            break
    raise ConfigError(f"messageDelayLevel: {text!r} is not a delay like 10s, 5m, 2h (a positive number and a unit)")


@dataclass(frozen=True, slots=True)
class DelayLevels:
    """Delay in ms of level 1..n (index 0 is level 1)."""

    delays_ms: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> DelayLevels:
        parts = text.split()
        if not parts:
            raise ConfigError("messageDelayLevel is empty: give at least one delay, e.g. '1s 5s 10s'")
        if len(parts) > MAX_LEVELS:
            raise ConfigError(f"messageDelayLevel has {len(parts)} levels; at most {MAX_LEVELS}")
        return cls(tuple(parse_duration_ms(p) for p in parts))

    @property
    def max_level(self) -> int:
        return len(self.delays_ms)

    def clamp(self, level: int) -> int:
        """Levels above the highest count as the highest (RocketMQ's rule)."""
        return min(level, self.max_level)

    def delay_ms(self, level: int) -> int:
        return self.delays_ms[self.clamp(level) - 1]

    def queue_delay_ms(self, queue_id: int) -> int:
        """The delay of the schedule queue ``queue_id`` (= level - 1); a queue past the table uses the highest."""
        return self.delays_ms[min(max(queue_id, 0), self.max_level - 1)]
