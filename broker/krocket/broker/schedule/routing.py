"""Where a delayed or timed message waits, and when a waiting entry is due (pure logic, no I/O).

Delay levels: ``SCHEDULE_TOPIC_XXXX`` queue ``level - 1`` (RocketMQ's layout). Timers (``TIMER_DELIVER_MS`` /
``TIMER_DELAY_SEC``): krocket's ``KROCKET_SYS_TIMER``, whose queue ``k`` delays every entry by a fixed
``100 ms * 2**k``. A timer with ``r`` ms to go waits in the largest queue whose delay fits in ``r``; when that hop
is due, the rest (less than the hop) waits in the next smaller queue, and so on (one hop per set bit of
``r / 100 ms``, at most 22 for 3 days). Every queue has one fixed delay, so its entries fall due in queue order:
the delivery service reads each queue front to back from a durable offset and never holds pending messages.

The consume-queue tag hash slot of a waiting entry holds its due time (store time + the queue's delay, as
RocketMQ does for SCHEDULE_TOPIC_XXXX), computed at dispatch from the queue and the store time alone.
"""

from __future__ import annotations

from krocket.common.errors import MessageIllegalError
from krocket.common.message import (
    PROPERTY_DELAY,
    PROPERTY_REAL_QUEUE_ID,
    PROPERTY_REAL_TOPIC,
    PROPERTY_TIMER_DELAY_SEC,
    PROPERTY_TIMER_DELIVER_MS,
)
from krocket.common.topic import SCHEDULE_TOPIC, TIMER_TOPIC

from .levels import DelayLevels

TIMER_UNIT_MS = 100
TIMER_QUEUES = 22  # queue 21 delays 100 ms * 2**21 = 58 h; together they reach past 3 days
TIMER_MAX_DELAY_MS = 3 * 86_400_000  # RocketMQ's timerMaxDelaySec default
WAITING_PROPERTIES = (PROPERTY_DELAY, PROPERTY_TIMER_DELIVER_MS, PROPERTY_TIMER_DELAY_SEC)


def timer_queue_delay_ms(queue_id: int) -> int:
    return TIMER_UNIT_MS << max(queue_id, 0)


def timer_queue_for(remaining_ms: int) -> int:
    """The timer queue for a timer ``remaining_ms`` (> 0) away: the largest whose delay is at most that."""
    units = remaining_ms // TIMER_UNIT_MS
    return min(max(units.bit_length() - 1, 0), TIMER_QUEUES - 1)


def _int_property(props: dict[str, str], name: str) -> int:
    try:
        return int(props[name])
    except ValueError:
        raise MessageIllegalError(f"property {name} must be an integer, got {props[name]!r}") from None


def timer_deliver_ms(props: dict[str, str], now_ms: int) -> int | None:
    """The epoch ms a timer message is due (None: not a timer); ``MessageIllegalError`` past 3 days."""
    if PROPERTY_TIMER_DELIVER_MS in props:
        deliver = _int_property(props, PROPERTY_TIMER_DELIVER_MS)
    elif PROPERTY_TIMER_DELAY_SEC in props:
        seconds = _int_property(props, PROPERTY_TIMER_DELAY_SEC)
        if seconds < 0:
            raise MessageIllegalError(f"property {PROPERTY_TIMER_DELAY_SEC} must not be negative, got {seconds}")
        deliver = now_ms + seconds * 1000
    else:
        return None
    if deliver - now_ms > TIMER_MAX_DELAY_MS:
        raise MessageIllegalError(
            f"timer message is due in {(deliver - now_ms) // 1000} s; at most {TIMER_MAX_DELAY_MS // 1000} s (3 days)"
        )
    return deliver


def delay_level(props: dict[str, str]) -> int:
    """The DELAY property as a level (0: not delayed)."""
    if PROPERTY_DELAY not in props:
        return 0
    return max(_int_property(props, PROPERTY_DELAY), 0)


def _waiting(props: dict[str, str], topic: str, queue_id: int) -> dict[str, str]:
    waiting = dict(props)
    waiting[PROPERTY_REAL_TOPIC] = topic
    waiting[PROPERTY_REAL_QUEUE_ID] = str(queue_id)
    return waiting


def schedule_if_delayed(
    props: dict[str, str], topic: str, queue_id: int, levels: DelayLevels, now_ms: int
) -> tuple[str, int, dict[str, str]]:
    """Where a message put to ``topic``/``queue_id`` is stored: itself when it is not delayed, else the schedule
    (DELAY > 0) or timer queue, with REAL_TOPIC / REAL_QID. A timer already due is stored where it was sent.
    Every put (a send, a retry from the broker) goes through this, so any DELAY > 0 is scheduled."""
    deliver = timer_deliver_ms(props, now_ms)
    if deliver is not None:
        if deliver <= now_ms:
            return topic, queue_id, delivered_properties(props)
        waiting = _waiting(props, topic, queue_id)
        waiting.pop(PROPERTY_TIMER_DELAY_SEC, None)
        waiting.pop(PROPERTY_DELAY, None)
        waiting[PROPERTY_TIMER_DELIVER_MS] = str(deliver)
        return TIMER_TOPIC, timer_queue_for(deliver - now_ms), waiting
    level = delay_level(props)
    if level <= 0:
        return topic, queue_id, props
    waiting = _waiting(props, topic, queue_id)
    level = levels.clamp(level)
    waiting[PROPERTY_DELAY] = str(level)
    return SCHEDULE_TOPIC, level - 1, waiting


def delivered_properties(props: dict[str, str]) -> dict[str, str]:
    """A due message's properties for its real topic: the original ones without the waiting marks (DELAY, the
    timer's); the message ids (UNIQ_KEY) and REAL_TOPIC / REAL_QID stay, as RocketMQ keeps them."""
    return {k: v for k, v in props.items() if k not in WAITING_PROPERTIES}


def entry_due_ms(topic: str, queue_id: int, store_ms: int, levels: DelayLevels) -> int | None:
    """The due time of a waiting entry stored at ``store_ms`` (its consume-queue tag slot); None for other topics."""
    if topic == SCHEDULE_TOPIC:
        return store_ms + levels.queue_delay_ms(queue_id)
    if topic == TIMER_TOPIC:
        return store_ms + timer_queue_delay_ms(queue_id)
    return None
