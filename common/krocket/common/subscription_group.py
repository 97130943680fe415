"""A consumer group's broker-side settings: RocketMQ's ``SubscriptionGroupConfig`` and its JSON field names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from krocket.common.errors import MessageIllegalError

DEFAULT_RETRY_MAX_TIMES = 16
# An orderly consumer's default: retry in place without limit (RocketMQ's Integer.MAX_VALUE).
ORDERLY_MAX_RECONSUME_TIMES = 2**31 - 1
DEFAULT_RETRY_QUEUE_NUMS = 1
MAX_GROUP_NAME_LENGTH = 255


@dataclass(slots=True)
class SubscriptionGroupConfig:
    group_name: str
    consume_enable: bool = True
    consume_from_min_enable: bool = True
    consume_broadcast_enable: bool = True
    consume_message_orderly: bool = False
    retry_queue_nums: int = DEFAULT_RETRY_QUEUE_NUMS
    retry_max_times: int = DEFAULT_RETRY_MAX_TIMES
    broker_id: int = 0
    which_broker_when_consume_slowly: int = 1
    notify_consumer_ids_changed_enable: bool = True

    def validate(self) -> None:
        name = self.group_name
        if not name or len(name) > MAX_GROUP_NAME_LENGTH or not all(c.isalnum() or c in "-_%|" for c in name):
            raise MessageIllegalError(
                f"group name {name!r} is not valid: 1 to {MAX_GROUP_NAME_LENGTH} of letters, digits, '-', '_', '%', '|'"
            )
        if self.retry_max_times < 0:
            raise MessageIllegalError(f"retryMaxTimes must not be negative, got {self.retry_max_times}")
        if self.retry_queue_nums < 0:
            raise MessageIllegalError(f"retryQueueNums must not be negative, got {self.retry_queue_nums}")

    def to_json(self) -> dict[str, Any]:
        return {
            "groupName": self.group_name,
            "consumeEnable": self.consume_enable,
            "consumeFromMinEnable": self.consume_from_min_enable,
            "consumeBroadcastEnable": self.consume_broadcast_enable,
            "consumeMessageOrderly": self.consume_message_orderly,
            "retryQueueNums": self.retry_queue_nums,
            "retryMaxTimes": self.retry_max_times,
            "brokerId": self.broker_id,
            "whichBrokerWhenConsumeSlowly": self.which_broker_when_consume_slowly,
            "notifyConsumerIdsChangedEnable": self.notify_consumer_ids_changed_enable,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SubscriptionGroupConfig:
        """Fields left out take RocketMQ's defaults; a value of the wrong type is ``MessageIllegalError``."""
        if not isinstance(d, dict):
            raise MessageIllegalError("a subscription group config must be a JSON object")
        try:
            return cls(
                group_name=str(d.get("groupName") or ""),
                consume_enable=_flag(d, "consumeEnable", True),
                consume_from_min_enable=_flag(d, "consumeFromMinEnable", True),
                consume_broadcast_enable=_flag(d, "consumeBroadcastEnable", True),
                consume_message_orderly=_flag(d, "consumeMessageOrderly", False),
                retry_queue_nums=int(d.get("retryQueueNums", DEFAULT_RETRY_QUEUE_NUMS)),
                retry_max_times=int(d.get("retryMaxTimes", DEFAULT_RETRY_MAX_TIMES)),
                broker_id=int(d.get("brokerId", 0)),
                which_broker_when_consume_slowly=int(d.get("whichBrokerWhenConsumeSlowly", 1)),
                notify_consumer_ids_changed_enable=_flag(d, "notifyConsumerIdsChangedEnable", True),
            )
        except (TypeError, ValueError) as exc:
            raise MessageIllegalError(f"subscription group config has a bad value: {exc}") from None


def _flag(d: dict[str, Any], key: str, default: bool) -> bool:
    value = d.get(key, default)
    if isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        return value.lower() == "true"
    return bool(value)
