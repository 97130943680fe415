"""PULL_MESSAGE (11), with long polling and tag filtering."""

from __future__ import annotations

from collections.abc import Awaitable

from krocket.broker.headers import Header
from krocket.broker.service import BrokerService, PullOutcome
from krocket.common.codes import PULL_FLAG_COMMIT_OFFSET, PULL_FLAG_SUBSCRIPTION, PULL_FLAG_SUSPEND
from krocket.common.remoting import Connection, RemotingCommand


def _reply(cmd: RemotingCommand, outcome: PullOutcome) -> RemotingCommand:
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


async def _reply_later(cmd: RemotingCommand, pending: Awaitable[PullOutcome]) -> RemotingCommand:
    return _reply(cmd, await pending)


def process_pull(
    service: BrokerService, conn: Connection, cmd: RemotingCommand
) -> RemotingCommand | Awaitable[RemotingCommand]:
    h = Header(cmd.ext_fields)
    sys_flag = h.int("sysFlag", 0)
    expression = h.opt("subscription") if sys_flag & PULL_FLAG_SUBSCRIPTION else None
    outcome = service.pull(
        group=h.str("consumerGroup"),
        topic=h.str("topic"),
        queue_id=h.int("queueId"),
        offset=h.int("queueOffset"),
        max_msgs=h.int("maxMsgNums", 32),
        expression=expression,
        suspend_ms=h.int("suspendTimeoutMillis", 0) if sys_flag & PULL_FLAG_SUSPEND else 0,
        commit_offset=h.int("commitOffset", -1) if sys_flag & PULL_FLAG_COMMIT_OFFSET else None,
    )
    if isinstance(outcome, PullOutcome):
        return _reply(cmd, outcome)
    return _reply_later(cmd, outcome)
