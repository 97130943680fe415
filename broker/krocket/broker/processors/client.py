"""HEART_BEAT (34), UNREGISTER_CLIENT (35), GET_CONSUMER_LIST_BY_GROUP (38). Heartbeats feed the consumer
manager and the producer manager (``krocket producer connections``).

A heartbeat creates no topic: a group's ``%RETRY%`` topic is created when it is first needed, by the first
send to it (``TopicManager.for_send``).
"""

from __future__ import annotations

import json

from krocket.broker.service import BrokerService
from krocket.common.codes import ResponseCode
from krocket.common.errors import MessageIllegalError
from krocket.common.headers import ConsumerGroupHeader, UnregisterClientHeader
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.route import dumps


def process_heartbeat(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    try:
        data = json.loads(cmd.body or b"{}")
    except ValueError as exc:
        raise MessageIllegalError(f"heartbeat body is not JSON: {exc}") from None
    except RecursionError:
        raise MessageIllegalError("heartbeat body nests too deeply") from None
    if not isinstance(data, dict):
        raise MessageIllegalError("heartbeat body must be a JSON object")
    service.consumers.heartbeat(conn, data)
    conn.attributes["client_version"] = (cmd.language, cmd.version)  # shown by GET_CONSUMER_CONNECTION_LIST
    service.producers.heartbeat(conn, data, cmd.language, cmd.version)  # shown by GET_PRODUCER_CONNECTION_LIST
    for consumer in data.get("consumerDataSet") or []:
        service.groups.find_or_create(str(consumer.get("groupName", "")))
    return cmd.response(ResponseCode.SUCCESS)


def process_unregister_client(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    h = UnregisterClientHeader.from_fields(cmd.ext_fields)
    service.consumers.unregister(conn, h.client_id, h.consumer_group, h.producer_group)
    if h.producer_group:
        service.producers.unregister(conn, h.producer_group)
    return cmd.response(ResponseCode.SUCCESS)


def process_consumer_list(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    group = ConsumerGroupHeader.from_fields(cmd.ext_fields).consumer_group
    ids = service.consumers.client_ids(group)
    if not ids:
        return cmd.response(ResponseCode.SYSTEM_ERROR, f"no consumer of group {group} is connected")
    return cmd.response(ResponseCode.SUCCESS, None, None, dumps({"consumerIdList": ids}))
