"""Producer queue selection: round robin over writable queues, skipping brokers that recently failed."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from krocket.common.message import java_string_hash
from krocket.common.route import TopicRouteData
from krocket.common.topic import is_writeable

from .types import MessageQueue

DEFAULT_TOPIC_QUEUE_NUMS = 4


def publish_queues(topic: str, route: TopicRouteData, max_queues: int | None = None) -> list[MessageQueue]:
    """Writable queues of brokers that have a master, sorted by broker name (RocketMQ's publish info).

    ``max_queues`` caps each broker's queue count (used with the auto-create topic's route).
    """
    queues: list[MessageQueue] = []
    for qd in sorted(route.queue_datas, key=lambda q: q.broker_name):
        if not is_writeable(qd.perm):
            continue
        broker = route.broker(qd.broker_name)
        if broker is None or broker.master_addr() is None:
            continue
        count = qd.write_queue_nums if max_queues is None else min(max_queues, qd.write_queue_nums)
        queues.extend(MessageQueue(topic, qd.broker_name, i) for i in range(count))
    return queues


class FaultTolerance:
    """Brokers that failed recently are avoided for ``isolation_s`` seconds (RocketMQ's lite variant)."""

    def __init__(self, isolation_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.isolation_s = isolation_s
        self._clock = clock
        self._failed_until: dict[str, float] = {}

    def mark_failed(self, broker_name: str) -> None:
        self._failed_until[broker_name] = self._clock() + self.isolation_s

    def mark_ok(self, broker_name: str) -> None:
        self._failed_until.pop(broker_name, None)

    def is_available(self, broker_name: str) -> bool:
        until = self._failed_until.get(broker_name)
        if until is None:
            return True
        if self._clock() >= until:
            del self._failed_until[broker_name]
            return True
        return False


class QueueSelector:
    """Round robin with a random start; a retry avoids the broker that just failed."""

    def __init__(self, faults: FaultTolerance | None = None, start: int | None = None) -> None:
        self.faults = faults or FaultTolerance()
        self._index = random.randrange(1 << 16) if start is None else start

    def select(self, queues: list[MessageQueue], last_failed: str | None = None) -> MessageQueue:
        if not queues:
            raise ValueError("no writable queue to select from")
        n = len(queues)
        start = self._index
        self._index += 1
        for i in range(n):
            mq = queues[(start + i) % n]
            if mq.broker_name != last_failed and self.faults.is_available(mq.broker_name):
                return mq
        for i in range(n):  # every broker is suspect: at least avoid the one that just failed
            mq = queues[(start + i) % n]
            if mq.broker_name != last_failed:
                return mq
        return queues[start % n]


def select_by_hash(queues: list[MessageQueue], msg: object, arg: object) -> MessageQueue:
    """An ordered-send selector: the same ``arg`` (an order id) always picks the same queue."""
    key = arg if isinstance(arg, int) else java_string_hash(str(arg))
    return queues[abs(key) % len(queues)]
