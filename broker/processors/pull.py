"""PULL_MESSAGE (11), with long polling and tag filtering."""

from __future__ import annotations

from krocket.broker.headers import Header
from krocket.broker.service import BrokerService
from krocket.common.codes import PULL_FLAG_COMMIT_OFFSET, PULL_FLAG_SUBSCRIPTION, PULL_FLAG_SUSPEND
from krocket.common.remoting import Connection, RemotingCommand


async def process_pull(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = Header(cmd.ext_fields)
    sys_flag = h.int("sysFlag", 0)
    expression = h.opt("subscription") if sys_flag & PULL_FLAG_SUBSCRIPTION else None
    outcome = await service.pull(
        group=h.str("consumerGroup"),
        topic=h.str("topic"),
        queue_id=h.int("queueId"),
        offset=h.int("queueOffset"),
        max_msgs=h.int("maxMsgNums", 32),
        expression=expression,
        suspend_ms=h.int("suspendTimeoutMillis", 0) if sys_flag & PULL_FLAG_SUSPEND else 0,
        commit_offset=h.int("commitOffset", -1) if sys_flag & PULL_FLAG_COMMIT_OFFSET else None,
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
