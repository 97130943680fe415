"""Consumer offsets (14, 15) and queue offsets (29, 30, 31, 32)."""

from __future__ import annotations

from krocket.broker.service import BrokerService
from krocket.common.codes import ResponseCode
from krocket.common.headers import (
    GetEarliestMsgStoretimeHeader,
    GetMaxOffsetHeader,
    GetMinOffsetHeader,
    QueryConsumerOffsetHeader,
    SearchOffsetHeader,
    UpdateConsumerOffsetHeader,
)
from krocket.common.remoting import Connection, RemotingCommand


def process_query_consumer_offset(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = QueryConsumerOffsetHeader.from_fields(cmd.ext_fields)
    offset = service.query_offset(h.consumer_group, h.topic, h.queue_id, h.set_zero_if_not_found)
    if offset is None:
        return cmd.response(ResponseCode.QUERY_NOT_FOUND, "no offset stored for this group and queue")
    return cmd.response(ResponseCode.SUCCESS, None, {"offset": offset})


async def process_update_consumer_offset(
    service: BrokerService, conn: Connection, cmd: RemotingCommand
) -> RemotingCommand:
    h = UpdateConsumerOffsetHeader.from_fields(cmd.ext_fields)
    await service.commit_offset(h.consumer_group, h.topic, h.queue_id, h.commit_offset)
    return cmd.response(ResponseCode.SUCCESS)


def process_max_offset(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = GetMaxOffsetHeader.from_fields(cmd.ext_fields)
    return cmd.response(ResponseCode.SUCCESS, None, {"offset": service.store.max_offset(h.topic, h.queue_id)})


def process_min_offset(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = GetMinOffsetHeader.from_fields(cmd.ext_fields)
    return cmd.response(ResponseCode.SUCCESS, None, {"offset": service.store.min_offset(h.topic, h.queue_id)})


def process_search_offset(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = SearchOffsetHeader.from_fields(cmd.ext_fields)
    offset = service.store.offset_by_time(h.topic, h.queue_id, h.timestamp)
    return cmd.response(ResponseCode.SUCCESS, None, {"offset": offset})


def process_earliest_time(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = GetEarliestMsgStoretimeHeader.from_fields(cmd.ext_fields)
    ts = service.store.earliest_store_time(h.topic, h.queue_id)
    return cmd.response(ResponseCode.SUCCESS, None, {"timestamp": ts if ts is not None else -1})
