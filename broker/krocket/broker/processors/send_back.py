"""CONSUMER_SEND_MSG_BACK (36): a message a consumer could not consume goes to its group's retry topic, later
(delay level ``3 + reconsumeTimes`` unless the request names one), or to its dead-letter queue once it has been
reconsumed ``maxReconsumeTimes`` times (or the request's delay level is negative).

The message is read back from the commit log by the offset the request names; the copy keeps its body, flag,
sysFlag, born time and host and properties (``UNIQ_KEY`` among them), counts one more reconsume, and carries
``RETRY_TOPIC`` (the topic it was first sent to) and ``ORIGIN_MESSAGE_ID`` (the first copy's offset message id).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

from krocket.broker.service import BrokerService, SendOutcome
from krocket.common.codes import PERM_READ_WRITE, ResponseCode
from krocket.common.errors import ServiceNotAvailableError
from krocket.common.headers import SEND_BACK_MAX_TIMES_VERSION, ConsumerSendMsgBackHeader
from krocket.common.message import (
    PROPERTY_DELAY,
    PROPERTY_ORIGIN_MESSAGE_ID,
    PROPERTY_RETRY_TOPIC,
    MessageExt,
)
from krocket.common.record import RecordError, decode_record, record_host
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.topic import DLQ_GROUP_PREFIX, TopicConfig, retry_topic, validate_group

log = logging.getLogger(__name__)

RETRY_QUEUE_NUMS = 1  # a group's retry topic: one queue (RocketMQ's retryQueueNums default)
DLQ_QUEUE_NUMS = 1  # RocketMQ's DLQ_NUMS_PER_GROUP
FIRST_RETRY_DELAY_LEVEL = 3  # delay level of the first retry: 3 + reconsumeTimes


def dlq_topic(group: str) -> str:
    return DLQ_GROUP_PREFIX + group


@dataclass(frozen=True, slots=True)
class SendBackTarget:
    """Where a sent-back message goes: the topic, and the delay level (0 for the dead-letter queue)."""

    topic: str
    delay_level: int
    dead: bool


def send_back_target(group: str, reconsume_times: int, delay_level: int, max_reconsume_times: int) -> SendBackTarget:
    """RocketMQ's rule: the DLQ once ``reconsume_times >= max`` or the delay level is negative, else the retry
    topic at the given level (0: ``3 + reconsume_times``)."""
    if reconsume_times >= max_reconsume_times or delay_level < 0:
        return SendBackTarget(dlq_topic(group), 0, True)
    return SendBackTarget(retry_topic(group), delay_level or FIRST_RETRY_DELAY_LEVEL + reconsume_times, False)


def retry_properties(msg: MessageExt, target: SendBackTarget) -> dict[str, str]:
    """The copy's properties: the original's, with RETRY_TOPIC set the first time, ORIGIN_MESSAGE_ID kept
    (or set to this copy's id), and DELAY for a retry (none in the DLQ)."""
    props = dict(msg.properties)
    props.setdefault(PROPERTY_RETRY_TOPIC, msg.topic)
    if not props.get(PROPERTY_ORIGIN_MESSAGE_ID):
        props[PROPERTY_ORIGIN_MESSAGE_ID] = msg.offset_msg_id
    props.pop(PROPERTY_DELAY, None)
    if target.delay_level > 0:
        props[PROPERTY_DELAY] = str(target.delay_level)
    return props


def _max_reconsume_times(service: BrokerService, cmd: RemotingCommand, h: ConsumerSendMsgBackHeader) -> int:
    if cmd.version >= SEND_BACK_MAX_TIMES_VERSION and h.max_reconsume_times is not None:
        return h.max_reconsume_times
    return service.groups.retry_max_times(h.group)


def _retry_queue_nums(service: BrokerService, group: str) -> int:
    """The group's retryQueueNums (1 unless its subscription group says otherwise)."""
    config = service.groups.get(group)
    return max(config.retry_queue_nums, 1) if config is not None else RETRY_QUEUE_NUMS


def ensure_topic(service: BrokerService, topic: str, queues: int) -> bool:
    """Create the retry or DLQ topic (read and write) on first use; True when it was created now."""
    if service.topics.get(topic) is not None:
        return False
    service.topics.upsert(TopicConfig(topic, queues, queues, PERM_READ_WRITE))
    return True


async def process_send_back(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = ConsumerSendMsgBackHeader.from_fields(cmd.ext_fields)
    validate_group(h.group)
    if service.config.is_slave:
        raise ServiceNotAvailableError(
            f"broker {service.config.broker_name} is a slave; send messages back to its master"
        )
    raw = service.store.read_record(h.offset) if h.offset >= 0 else None
    if raw is None:
        return cmd.response(ResponseCode.SYSTEM_ERROR, f"look message by offset failed: no message at {h.offset}")
    try:
        msg = decode_record(raw, decompress=False)
    except RecordError as exc:
        return cmd.response(ResponseCode.SYSTEM_ERROR, f"look message by offset {h.offset} failed: {exc}")
    target = send_back_target(h.group, msg.reconsume_times, h.delay_level, _max_reconsume_times(service, cmd, h))
    created = ensure_topic(
        service, target.topic, DLQ_QUEUE_NUMS if target.dead else _retry_queue_nums(service, h.group)
    )
    wrote = service.store.commitlog.wrote
    outcome = service.send(
        target.topic,
        0,
        msg.body,
        retry_properties(msg, target),
        msg.flag,
        msg.sys_flag,
        msg.born_timestamp,
        record_host(msg.born_host),
        msg.reconsume_times + 1,
    )
    service.traffic.record_put(target.topic, 1, service.store.commitlog.wrote - wrote)  # stored before any wait
    if inspect.isawaitable(outcome):
        outcome = await outcome
    assert isinstance(outcome, SendOutcome)
    if created and service.publish_routes is not None:
        await service.publish_routes()  # clients can route to the new topic at once
    if target.dead:
        log.info("group %s: message %s reached %s after %d reconsumes", h.group, msg.msg_id, target.topic,
                 msg.reconsume_times)  # fmt: skip
    return cmd.response(outcome.code, outcome.remark)
