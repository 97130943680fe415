"""Consumer offsets (14, 15) and queue offsets (29, 30, 31, 32)."""

from __future__ import annotations

from krocket.broker.headers import Header
from krocket.broker.service import BrokerService
from krocket.common.codes import ResponseCode
from krocket.common.remoting import Connection, RemotingCommand


def process_query_consumer_offset(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = Header(cmd.ext_fields)
    offset = service.query_offset(
        h.str("consumerGroup"), h.str("topic"), h.int("queueId"), h.bool("setZeroIfNotFound", True)
    )
    if offset is None:
        return cmd.response(ResponseCode.QUERY_NOT_FOUND, "no offset stored for this group and queue")
    return cmd.response(ResponseCode.SUCCESS, None, {"offset": offset})


async def process_update_consumer_offset(
    service: BrokerService, conn: Connection, cmd: RemotingCommand
) -> RemotingCommand:
    h = Header(cmd.ext_fields)
    await service.commit_offset(h.str("consumerGroup"), h.str("topic"), h.int("queueId"), h.int("commitOffset"))
    return cmd.response(ResponseCode.SUCCESS)


def process_max_offset(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = Header(cmd.ext_fields)
    return cmd.response(
        ResponseCode.SUCCESS, None, {"offset": service.store.max_offset(h.str("topic"), h.int("queueId"))}
    )


def process_min_offset(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = Header(cmd.ext_fields)
    return cmd.response(
        ResponseCode.SUCCESS, None, {"offset": service.store.min_offset(h.str("topic"), h.int("queueId"))}
    )


def process_search_offset(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = Header(cmd.ext_fields)
    offset = service.store.offset_by_time(h.str("topic"), h.int("queueId"), h.int("timestamp"))
    return cmd.response(ResponseCode.SUCCESS, None, {"offset": offset})


def process_earliest_time(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = Header(cmd.ext_fields)
    ts = service.store.earliest_store_time(h.str("topic"), h.int("queueId"))
    return cmd.response(ResponseCode.SUCCESS, None, {"timestamp": ts if ts is not None else -1})
