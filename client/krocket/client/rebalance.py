"""Queue allocation among a group's consumers (RocketMQ's AllocateMessageQueueAveragely)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

Q = TypeVar("Q")


def allocate_averagely(queues: Sequence[Q], consumers: Sequence[str], me: str) -> list[Q]:
    """The queues ``me`` should consume: contiguous, as even as possible, first consumers get the extra.

    Both lists are sorted here, so every member computes the same split. With more consumers than queues,
    the last consumers get nothing. A consumer not in the list gets nothing.
    """
    all_queues = sorted(queues)  # type: ignore[type-var]
    ids = sorted(consumers)
    if not all_queues or me not in ids:
        return []
    index = ids.index(me)
    n, m = len(all_queues), len(ids)
    mod = n % m
    if n <= m:
        size = 1
    elif mod > 0 and index < mod:
        size = n // m + 1
    else:
        size = n // m
    start = index * size if mod > 0 and index < mod else index * size + mod
    count = min(size, n - start)
    return [all_queues[(start + i) % n] for i in range(max(count, 0))]
