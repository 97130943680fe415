"""PULL_MESSAGE (11), with long polling and tag filtering; JSON replies without a remark come from the
``pull_reply`` template."""

from __future__ import annotations

from collections.abc import Awaitable

from krocket.broker.processors.pull_reply import pull_response
from krocket.broker.service import BrokerService, PullOutcome
from krocket.common.codes import PULL_FLAG_COMMIT_OFFSET, PULL_FLAG_SUBSCRIPTION, PULL_FLAG_SUSPEND, ResponseCode
from krocket.common.headers import PullMessageHeader
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.remoting.command import SERIALIZE_JSON


def _reply(cmd: RemotingCommand, outcome: PullOutcome) -> RemotingCommand:
    if outcome.remark is None and cmd.serialize == SERIALIZE_JSON:
        return pull_response(
            cmd,
            outcome.code,
            outcome.next_begin_offset,
            outcome.min_offset,
            outcome.max_offset,
            outcome.suggest_broker_id,
            outcome.body,
        )
    return cmd.response(
        outcome.code,
        outcome.remark,
        {
            "nextBeginOffset": outcome.next_begin_offset,
            "minOffset": outcome.min_offset,
            "maxOffset": outcome.max_offset,
            "suggestWhichBrokerId": outcome.suggest_broker_id,
        },
        outcome.body,
    )


def record_count(body: bytes) -> int:
    """How many records a pull body holds (each starts with its total size, big-endian)."""
    count = pos = 0
    end = len(body)
    while pos + 4 <= end:
        size = int.from_bytes(body[pos : pos + 4], "big")
        if size <= 0:
            break
        pos += size
        count += 1
    return count


async def _reply_later(
    service: BrokerService, group: str, topic: str, cmd: RemotingCommand, pending: Awaitable[PullOutcome]
) -> RemotingCommand:
    outcome = await pending
    if outcome.code == ResponseCode.SUCCESS and outcome.body:  # a long poll woken: count what it found
        service.traffic.record_get(group, topic, record_count(outcome.body), len(outcome.body))
    return _reply(cmd, outcome)


def process_pull(
    service: BrokerService, conn: Connection, cmd: RemotingCommand
) -> RemotingCommand | Awaitable[RemotingCommand]:
    h = PullMessageHeader.from_fields(cmd.ext_fields)
    sys_flag = h.sys_flag
    pulled = service.pulled_messages
    outcome = service.pull(
        group=h.consumer_group,
        topic=h.topic,
        queue_id=h.queue_id,
        offset=h.queue_offset,
        max_msgs=h.max_msg_nums,
        expression=h.subscription if sys_flag & PULL_FLAG_SUBSCRIPTION else None,
        suspend_ms=h.suspend_timeout_millis if sys_flag & PULL_FLAG_SUSPEND else 0,
        commit_offset=h.commit_offset if sys_flag & PULL_FLAG_COMMIT_OFFSET else None,
    )
    if isinstance(outcome, PullOutcome):
        if outcome.code == ResponseCode.SUCCESS:  # the service counted what it found
            service.traffic.record_get(h.consumer_group, h.topic, service.pulled_messages - pulled, len(outcome.body))
        return _reply(cmd, outcome)
    return _reply_later(service, h.consumer_group, h.topic, cmd, outcome)
