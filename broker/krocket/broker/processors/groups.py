"""Subscription groups (200, 201, 207), consume stats (208), consumer connections (203), offset reset (222)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from krocket.broker.service import BrokerService
from krocket.common.codes import LanguageCode, RequestCode, ResponseCode
from krocket.common.errors import KrocketError, MessageIllegalError
from krocket.common.headers.groups import (
    RESET_TO_LAST,
    DeleteSubscriptionGroupHeader,
    GetConsumerConnectionListHeader,
    GetConsumeStatsHeader,
    ResetOffsetHeader,
    encode_offset_list_for_c,
    encode_offset_table,
    queue_key,
)
from krocket.common.record import parse_record
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.route import dumps
from krocket.common.subscription_group import SubscriptionGroupConfig
from krocket.common.topic import RETRY_GROUP_PREFIX


def process_update_group(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    try:
        raw = json.loads(cmd.body or b"{}")
    except (ValueError, RecursionError) as exc:
        raise MessageIllegalError(f"subscription group body is not JSON: {exc}") from None
    service.groups.upsert(SubscriptionGroupConfig.from_json(raw))
    return cmd.response(ResponseCode.SUCCESS)


def process_all_groups(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    return cmd.response(ResponseCode.SUCCESS, None, None, dumps(service.groups.to_json()))


def process_delete_group(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = DeleteSubscriptionGroupHeader.from_fields(cmd.ext_fields)
    service.groups.delete(h.group_name)
    service.traffic.forget_group(h.group_name)
    return cmd.response(ResponseCode.SUCCESS)


def consume_stats(service: BrokerService, group: str, topic: str | None) -> dict[str, Any]:
    """RocketMQ's ConsumeStats: per queue the broker's and the group's offsets and the store time of the last
    consumed message; consumeTps is not measured by krocket (0)."""
    topics = [topic] if topic else sorted(service.offsets.offsets_of(group))
    table: dict[str, dict[str, int]] = {}
    for name in topics:
        if name.startswith(RETRY_GROUP_PREFIX) and not topic:
            continue
        config = service.topics.get(name)
        queues = range(config.read_queue_nums) if config is not None else service.store.queue_ids(name)
        for queue_id in queues:
            consumer_offset = service.offsets.query(group, name, queue_id)
            table[queue_key(service.config.broker_name, name, queue_id)] = {
                "brokerOffset": service.store.max_offset(name, queue_id),
                "consumerOffset": consumer_offset if consumer_offset is not None else 0,
                "lastTimestamp": _last_timestamp(service, name, queue_id, consumer_offset or 0),
            }
    return {"offsetTable": table, "consumeTps": 0.0}


def _last_timestamp(service: BrokerService, topic: str, queue_id: int, consumer_offset: int) -> int:
    if consumer_offset <= 0:
        return 0
    got = service.store.get_messages(topic, queue_id, consumer_offset - 1, max_msgs=1)
    if not got.count:
        return 0
    with contextlib.suppress(ValueError, IndexError):
        return parse_record(bytes(got.body), 0, -1, check_crc=False).store_timestamp
    return 0


def process_consume_stats(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = GetConsumeStatsHeader.from_fields(cmd.ext_fields)
    return cmd.response(ResponseCode.SUCCESS, None, None, dumps(consume_stats(service, h.consumer_group, h.topic)))


def consumer_connection(service: BrokerService, group: str) -> dict[str, Any] | None:
    """RocketMQ's ConsumerConnection of a group, None when no client of it is connected."""
    info = service.consumers.groups.get(group)
    if info is None or not info.channels:
        return None
    connections = []
    for channel in info.channels.values():
        language, version = channel.connection.attributes.get("client_version", (LanguageCode.OTHER, 0))
        connections.append(
            {
                "clientId": channel.client_id,
                "clientAddr": channel.connection.peer,
                "language": _language_name(language),
                "version": version,
            }
        )
    return {
        "connectionSet": sorted(connections, key=lambda c: (c["clientId"], c["clientAddr"])),
        "subscriptionTable": {
            topic: {
                "topic": sub.topic,
                "subString": sub.sub_string,
                "tagsSet": sorted(sub.tags_set),
                "codeSet": sorted(sub.code_set),
                "subVersion": sub.sub_version,
            }
            for topic, sub in sorted(info.subscriptions.items())
        },
        "consumeType": info.consume_type,
        "messageModel": info.message_model,
        "consumeFromWhere": info.consume_from,
    }


def _language_name(code: int) -> str:
    try:
        return LanguageCode(code).name
    except ValueError:
        return "OTHER"


def process_consumer_connections(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    group = GetConsumerConnectionListHeader.from_fields(cmd.ext_fields).consumer_group
    body = consumer_connection(service, group)
    if body is None:
        return cmd.response(ResponseCode.CONSUMER_NOT_ONLINE, f"the consumer group[{group}] not online")
    return cmd.response(ResponseCode.SUCCESS, None, None, dumps(body))


def reset_offsets(service: BrokerService, topic: str, group: str, timestamp: int, force: bool) -> dict[int, int]:
    """queueId -> the offset ``group`` continues from on ``topic``: found by store time (``RESET_TO_LAST``: each
    queue's end). Without ``force`` a queue only moves back. The broker commits the new offsets itself, so a group
    with no client online is reset too, and ignores the group's commits on a queue until a consumer pulls from the
    new offset there: a commit the client sent before it heard of the reset does not undo it."""
    config = service.topics.get(topic)
    queues = range(config.read_queue_nums) if config is not None else service.store.queue_ids(topic)
    table: dict[int, int] = {}
    for queue_id in queues:
        if timestamp == RESET_TO_LAST:
            target = service.store.max_offset(topic, queue_id)
        elif timestamp <= 0:
            target = service.store.min_offset(topic, queue_id)
        else:
            target = service.store.offset_by_time(topic, queue_id, timestamp)
        current = service.offsets.query(group, topic, queue_id)
        if not force and current is not None and current <= target:
            target = current
        service.offsets.assign_reset(group, topic, queue_id, target)
        table[queue_id] = target
    return table


async def process_reset_offset(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    """Consumers get the new offsets one way: C++ clients in the ForC list form they decode, others the map."""
    h = ResetOffsetHeader.from_fields(cmd.ext_fields)
    table = reset_offsets(service, h.topic, h.group, h.timestamp, h.is_force)
    await service.offsets.persist_durably()
    body = dumps(encode_offset_table(service.config.broker_name, h.topic, table))
    body_for_c = dumps(encode_offset_list_for_c(service.config.broker_name, h.topic, table))
    info = service.consumers.groups.get(h.group)
    for channel in list(info.channels.values()) if info is not None else []:
        language = channel.connection.attributes.get("client_version", (LanguageCode.OTHER, 0))[0]
        told = body_for_c if language == LanguageCode.CPP else body
        tell = RemotingCommand(RequestCode.RESET_CONSUMER_CLIENT_OFFSET, ext_fields=h.to_fields(), body=told)
        with contextlib.suppress(KrocketError):
            await channel.connection.oneway(tell)
    return cmd.response(ResponseCode.SUCCESS, None, None, body)
