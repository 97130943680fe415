"""PULL_MESSAGE (11), with long polling and tag filtering; JSON replies without a remark come from the
``pull_reply`` template."""

from __future__ import annotations

from collections.abc import Awaitable

from krocket.broker.processors.pull_reply import pull_response
from krocket.broker.service import BrokerService, PullOutcome
from krocket.common.codes import PULL_FLAG_COMMIT_OFFSET, PULL_FLAG_SUBSCRIPTION, PULL_FLAG_SUSPEND
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


async def _reply_later(cmd: RemotingCommand, pending: Awaitable[PullOutcome]) -> RemotingCommand:
    return _reply(cmd, await pending)


def process_pull(
    service: BrokerService, conn: Connection, cmd: RemotingCommand
) -> RemotingCommand | Awaitable[RemotingCommand]:
    h = PullMessageHeader.from_fields(cmd.ext_fields)
    sys_flag = h.sys_flag
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
        return _reply(cmd, outcome)
    return _reply_later(cmd, outcome)
