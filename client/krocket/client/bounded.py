"""Many small requests at once, a bounded number in flight (route refreshes, rebalance rounds)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def map_bounded(fn: Callable[[T], Awaitable[R]], items: Sequence[T], limit: int) -> list[R | Exception]:
    """``fn(item)`` for every item, at most ``limit`` running at a time; the results in the items' order, an
    ``Exception`` in the place of an item whose call raised one (cancellation is not caught)."""
    results: list[R | Exception] = [None] * len(items)  # type: ignore[list-item]  # every slot is filled below
    todo = iter(enumerate(items))

    async def worker() -> None:
        for index, item in todo:  # one iterator shared by the workers: each item is taken once
            try:
                results[index] = await fn(item)
            except Exception as exc:
                results[index] = exc

    await asyncio.gather(*(worker() for _ in range(min(max(limit, 1), len(items)))))
    return results
