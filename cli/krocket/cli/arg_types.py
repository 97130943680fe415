"""argparse ``type=`` functions for numeric arguments, defined once: each parses and checks a range, and
argparse turns a refusal into one usage line and exit code 2."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from krocket.common.topic import MAX_QUEUE_NUMS


def int_in_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An int between ``low`` and ``high`` (inclusive; no upper bound when None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def float_at_least(low: float, *, exclusive: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low or (exclusive and value == low):
            raise argparse.ArgumentTypeError(f"must be {'more than' if exclusive else 'at least'} {low:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = int_in_range(1)
non_negative_int = int_in_range(0)
port = int_in_range(1, 65535)
port_or_zero = int_in_range(0, 65535)  # 0: the system picks a free port
queue_count = int_in_range(1, MAX_QUEUE_NUMS)
broker_id = int_in_range(0)
seconds = float_at_least(0.0, exclusive=True)
non_negative_seconds = float_at_least(0.0)
non_negative_float = float_at_least(0.0)
