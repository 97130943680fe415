"""CONSUMER_SEND_MSG_BACK (36): a consumer hands a message it could not consume back to the broker."""

from __future__ import annotations

from dataclasses import dataclass

from krocket.common.headers.fields import RequestHeader

# The request version from which the broker reads ``maxReconsumeTimes`` from the header (RocketMQ's V3_4_9);
# below it the subscription group's retryMaxTimes applies. The C++ client sends version 63.
SEND_BACK_MAX_TIMES_VERSION = 121


@dataclass(slots=True)
class ConsumerSendMsgBackHeader(RequestHeader):
    """The message by its commit log ``offset`` on the broker asked; ``delay_level`` 0 lets the broker choose
    (3 + reconsume times), a negative one sends it straight to the dead-letter queue."""

    offset: int
    group: str
    delay_level: int = 0
    origin_msg_id: str | None = None
    origin_topic: str | None = None
    unit_mode: bool = False
    max_reconsume_times: int | None = None
