"""Delay levels and 5.x timers: delayed messages wait in SCHEDULE_TOPIC_XXXX / KROCKET_SYS_TIMER until due.

``schedule_if_delayed(props, topic, queue_id, levels, now_ms)`` is the one call of the put path (sends, and the
broker's own puts such as retries); ``delivery.ScheduleDelivery`` re-puts due messages on the master.
"""

from krocket.broker.schedule.levels import DEFAULT_DELAY_LEVELS, DelayLevels, parse_duration_ms
from krocket.broker.schedule.routing import (
    TIMER_MAX_DELAY_MS,
    delivered_properties,
    entry_due_ms,
    schedule_if_delayed,
)

__all__ = [
    "DEFAULT_DELAY_LEVELS",
    "TIMER_MAX_DELAY_MS",
    "DelayLevels",
    "delivered_properties",
    "entry_due_ms",
    "parse_duration_ms",
    "schedule_if_delayed",
]
