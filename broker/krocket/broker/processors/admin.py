"""Admin codes: topics (17, 21, 215, 351), offsets table (43), runtime info (28), messages (12, 33)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from krocket.broker.service import BrokerService
from krocket.common.codes import ResponseCode
from krocket.common.errors import MessageIllegalError, TopicNotExistError
from krocket.common.headers import (
    CreateTopicHeader,
    DeleteTopicInBrokerHeader,
    GetTopicConfigHeader,
    QueryMessageHeader,
    ViewMessageHeader,
)
from krocket.common.message_id import decode_offset_msg_id
from krocket.common.register_body import (
    ACCEPT_COMPRESSED_FIELD,
    COMPRESSED_FIELD,
    KNOWN_VERSION_FIELD,
    UNCHANGED_FIELD,
    maybe_compress,
    version_key,
)
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.route import dumps
from krocket.common.topic import TopicConfig
from krocket.common.topic_attributes import apply_attribute_changes


async def process_create_topic(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = CreateTopicHeader.from_fields(cmd.ext_fields)
    current = service.topics.get(h.topic)
    config = TopicConfig(
        topic_name=h.topic,
        read_queue_nums=h.read_queue_nums,
        write_queue_nums=h.write_queue_nums,
        perm=h.perm,
        topic_filter_type=h.topic_filter_type,
        topic_sys_flag=h.topic_sys_flag,
        order=h.order,
        attributes=apply_attribute_changes(current.attributes if current else {}, h.attributes),
    )
    service.create_topic(config)
    return cmd.response(ResponseCode.SUCCESS)


async def process_create_topic_list(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    """UPDATE_AND_CREATE_TOPIC_LIST (18), RocketMQ 5's bulk create: ``{"topicConfigList": [TopicConfig, ...]}``;
    a config's ``attributes`` are the topic's whole set when given, the topic keeps its own when the key is
    absent. All are checked before any is applied."""
    try:
        data = json.loads(cmd.body or b"")
    except (UnicodeDecodeError, ValueError):
        raise MessageIllegalError("UPDATE_AND_CREATE_TOPIC_LIST body is not JSON") from None
    raw = data.get("topicConfigList") if isinstance(data, dict) else None
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise MessageIllegalError("UPDATE_AND_CREATE_TOPIC_LIST body needs topicConfigList, a list of topic configs")
    try:
        configs = [TopicConfig.from_json(t) for t in raw]
    except (KeyError, TypeError, ValueError) as exc:
        raise MessageIllegalError(f"UPDATE_AND_CREATE_TOPIC_LIST: a bad topic config: {exc}") from None
    for config, given in zip(configs, raw, strict=True):
        current = service.topics.get(config.topic_name)
        if "attributes" not in given and current is not None:
            config.attributes = dict(current.attributes)
    changed = service.create_topics(configs)
    return cmd.response(ResponseCode.SUCCESS, f"{len(configs)} topics applied, {len(changed)} changed")


async def process_delete_topic(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    topic = DeleteTopicInBrokerHeader.from_fields(cmd.ext_fields).topic
    service.delete_topic(topic)
    return cmd.response(ResponseCode.SUCCESS)


async def process_all_topic_config(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    """GET_ALL_TOPIC_CONFIG: the whole table, or, for a krocket slave that names the version it holds, "unchanged"
    and no body while that is the version; deflated when large and the caller takes it. The table is encoded off
    the event loop (a copy of it, in a thread): 100 k topics take a few hundred ms that sends must not wait for."""
    version = service.topics.version()
    if cmd.ext_fields.get(KNOWN_VERSION_FIELD) == version_key(version):
        return cmd.response(ResponseCode.SUCCESS, ext_fields={UNCHANGED_FIELD: "true"})
    compress = cmd.ext_fields.get(ACCEPT_COMPRESSED_FIELD) == "true"
    table = dict(service.topics.topics)
    body, compressed = await asyncio.get_running_loop().run_in_executor(
        None, _topic_table_body, table, version, compress
    )
    return cmd.response(ResponseCode.SUCCESS, None, {COMPRESSED_FIELD: "true"} if compressed else None, body)


def _topic_table_body(table: dict[str, TopicConfig], version: dict[str, Any], compress: bool) -> tuple[bytes, bool]:
    body = dumps({"topicConfigTable": {n: c.to_json() for n, c in table.items()}, "dataVersion": version})
    return maybe_compress(body) if compress else (body, False)


async def process_get_topic_config(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    topic = GetTopicConfigHeader.from_fields(cmd.ext_fields).topic
    config = service.topics.get(topic)
    if config is None:
        raise TopicNotExistError(f"topic {topic} does not exist on broker {service.config.broker_name}")
    return cmd.response(ResponseCode.SUCCESS, None, None, dumps({"topicConfig": config.to_json()}))


async def process_all_consumer_offset(
    service: BrokerService, conn: Connection, cmd: RemotingCommand
) -> RemotingCommand:
    table = {key: {str(q): o for q, o in queues.items()} for key, queues in service.offsets.table.items()}
    return cmd.response(ResponseCode.SUCCESS, None, None, dumps({"offsetTable": table}))


async def process_runtime_info(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    stats = {k: str(v) for k, v in service.store.stats().items()}
    stats.update(
        {
            "brokerName": service.config.broker_name,
            "brokerId": str(service.config.broker_id),
            "commitLogMaxOffset": str(service.store.max_phy_offset),
            "msgPutTotal": str(service.sent_messages),
            "msgGetTotal": str(service.pulled_messages),
        }
    )
    if service.ha_master is not None:
        slaves = service.ha_master.status()
        stats["slaveLagBytes"] = ",".join(f"{s['peer']}={s['lagBytes']}" for s in slaves)
        stats["slaveCount"] = str(len(slaves))
    return cmd.response(ResponseCode.SUCCESS, None, None, dumps({"table": stats}))


async def process_view_message(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = ViewMessageHeader.from_fields(cmd.ext_fields)
    offset = h.offset
    if offset < 0 and h.msg_id:
        offset = decode_offset_msg_id(h.msg_id)[1]
    record = service.store.read_record(offset)
    if record is None:
        return cmd.response(ResponseCode.SYSTEM_ERROR, f"no message at commit log offset {offset}")
    return cmd.response(ResponseCode.SUCCESS, None, None, record)


async def process_query_message(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = QueryMessageHeader.from_fields(cmd.ext_fields)
    records = service.store.query_by_key(h.topic, h.key, h.max_num, h.begin_timestamp, h.end_timestamp)
    if not records:
        return cmd.response(ResponseCode.QUERY_NOT_FOUND, "no message with that key")
    return cmd.response(
        ResponseCode.SUCCESS, None, {"indexLastUpdateTimestamp": 0, "indexLastUpdatePhyoffset": 0}, b"".join(records)
    )
