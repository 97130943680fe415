"""Bodies of LOCK_BATCH_MQ (41) and UNLOCK_BATCH_MQ (42), as RocketMQ clients write them.

Request: ``{"consumerGroup", "clientId", "mqSet": [{"topic", "brokerName", "queueId"}]}`` (Java clients may add
``onlyThisBroker``; the C++ client does not). Reply to 41: ``{"lockOKMQSet": [...]}`` with ``queueId`` a number.
Parsing is lenient as the clients' JSON is: numbers may come as strings, numeric keys unquoted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from krocket.common.errors import MessageIllegalError
from krocket.common.route import dumps, loads_lenient

FIELD_CONSUMER_GROUP = "consumerGroup"
FIELD_CLIENT_ID = "clientId"
FIELD_MQ_SET = "mqSet"
FIELD_LOCK_OK_MQ_SET = "lockOKMQSet"


@dataclass(frozen=True, order=True)
class LockedQueue:
    """A message queue as the lock bodies name it."""

    topic: str
    broker_name: str
    queue_id: int

    def to_json(self) -> dict[str, object]:
        return {"topic": self.topic, "brokerName": self.broker_name, "queueId": self.queue_id}


@dataclass
class LockBatchRequest:
    consumer_group: str
    client_id: str
    queues: list[LockedQueue] = field(default_factory=list)

    def to_body(self) -> bytes:
        return dumps(
            {
                FIELD_CONSUMER_GROUP: self.consumer_group,
                FIELD_CLIENT_ID: self.client_id,
                FIELD_MQ_SET: [mq.to_json() for mq in self.queues],
            }
        )

    @classmethod
    def from_body(cls, body: bytes | None) -> LockBatchRequest:
        data = _parse_object(body, "lock body")
        group = data.get(FIELD_CONSUMER_GROUP)
        client_id = data.get(FIELD_CLIENT_ID)
        if not isinstance(group, str) or not group:
            raise MessageIllegalError("lock body has no consumerGroup")
        if not isinstance(client_id, str) or not client_id:
            raise MessageIllegalError("lock body has no clientId")
        return cls(group, client_id, parse_queues(data.get(FIELD_MQ_SET)))


def lock_ok_body(queues: list[LockedQueue]) -> bytes:
    return dumps({FIELD_LOCK_OK_MQ_SET: [mq.to_json() for mq in queues]})


def parse_lock_ok_body(body: bytes | None) -> list[LockedQueue]:
    return parse_queues(_parse_object(body, "lock reply").get(FIELD_LOCK_OK_MQ_SET))


def parse_queues(raw: object) -> list[LockedQueue]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise MessageIllegalError("mqSet must be a list")
    queues: list[LockedQueue] = []
    for item in raw:
        if not isinstance(item, dict):
            raise MessageIllegalError("an mqSet entry must be an object")
        topic, broker_name, queue_id = item.get("topic"), item.get("brokerName"), item.get("queueId")
        if not isinstance(topic, str) or not isinstance(broker_name, str):
            raise MessageIllegalError("an mqSet entry needs topic and brokerName")
        queues.append(LockedQueue(topic, broker_name, _queue_id(queue_id)))
    return queues


def _queue_id(raw: object) -> int:
    """A queueId as a number or a numeric string (the C++ client's JSON)."""
    if isinstance(raw, int | str) and not isinstance(raw, bool):
        try:
            return int(raw)
        except ValueError:
            pass
    raise MessageIllegalError(f"an mqSet entry has a bad queueId: {raw!r}")


def _parse_object(body: bytes | None, what: str) -> dict[str, object]:
    try:
        data = loads_lenient(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise MessageIllegalError(f"{what} is not JSON") from None
    except RecursionError:
        raise MessageIllegalError(f"{what} nests too deeply") from None
    if not isinstance(data, dict):
        raise MessageIllegalError(f"{what} must be a JSON object")
    return data
