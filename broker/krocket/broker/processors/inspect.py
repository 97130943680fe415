"""mqadmin's inspection and control codes on the broker: producer connections (204), topic stats (202), the
broker's traffic by topic and group (317), its config (26, 25) and the runtime table with traffic rates (28).

Rates and totals come from ``service.traffic`` (``TrafficStats``): messages per second over the last 10 s and
the last minute, totals since the broker started.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from krocket.broker.processors.admin import process_runtime_info
from krocket.broker.runtime_config import apply_runtime_update, config_table, parse_properties, properties_text
from krocket.broker.service import BrokerService
from krocket.broker.store import GetStatus
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import TopicNotExistError
from krocket.common.headers import GetProducerConnectionListHeader, GetTopicStatsInfoHeader
from krocket.common.headers.groups import queue_key
from krocket.common.record import POS_STORE_TIMESTAMP, store_timestamp_of
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.route import dumps

SHORT_WINDOW_S = 10
MINUTE_S = 60


def process_producer_connections(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    group = GetProducerConnectionListHeader.from_fields(cmd.ext_fields).producer_group
    clients = service.producers.connections(group)
    if not clients:
        return cmd.response(ResponseCode.SYSTEM_ERROR, f"the producer group[{group}] not online")
    return cmd.response(ResponseCode.SUCCESS, None, None, dumps({"connectionSet": [c.to_json() for c in clients]}))


def topic_stats_table(service: BrokerService, topic: str) -> dict[str, dict[str, int]]:
    """RocketMQ's TopicStatsTable ``offsetTable``: per queue its min and max offset and the store time of its
    last message (0 when it holds none)."""
    config = service.topics.get(topic)
    if config is None:
        raise TopicNotExistError(f"topic {topic} does not exist on broker {service.config.broker_name}")
    broker = service.config.broker_name
    table: dict[str, dict[str, int]] = {}
    for queue_id in range(config.read_queue_nums):
        low, high = service.store.min_offset(topic, queue_id), service.store.max_offset(topic, queue_id)
        table[queue_key(broker, topic, queue_id)] = {
            "minOffset": low,
            "maxOffset": high,
            "lastUpdateTimestamp": last_store_time(service, topic, queue_id, low, high),
        }
    return table


def last_store_time(service: BrokerService, topic: str, queue_id: int, low: int, high: int) -> int:
    if high <= low:
        return 0
    got = service.store.get_messages(topic, queue_id, high - 1, 1)
    if got.status != GetStatus.FOUND or len(got.body) < POS_STORE_TIMESTAMP + 8:
        return 0
    return store_timestamp_of(got.body[POS_STORE_TIMESTAMP : POS_STORE_TIMESTAMP + 8])


def process_topic_stats(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    topic = GetTopicStatsInfoHeader.from_fields(cmd.ext_fields).topic
    body = {"offsetTable": topic_stats_table(service, topic), "topicPutTps": service.traffic.put_rate(topic)[0]}
    return cmd.response(ResponseCode.SUCCESS, None, None, dumps(body))


def broker_traffic(service: BrokerService) -> dict[str, Any]:
    """krocket's body of GET_BROKER_CONSUME_STATS: per topic what came in, per (group, topic) what went out and
    the group's lag (messages behind the queues' ends, over the queues it committed offsets of)."""
    traffic = service.traffic
    topics = [
        {
            "topic": topic,
            "inTps": round(traffic.put_rate(topic)[0], 2),
            "inMsgTotal": t.messages,
            "inBytesTotal": t.bytes,
        }
        for topic, t in sorted(traffic.put.items())
    ]
    pairs = {tuple(reversed(key.partition("@")[::2])) for key in service.offsets.table} | set(traffic.get)
    groups = []
    for group, topic in sorted(pairs):
        got = traffic.get.get((group, topic))
        committed = service.offsets.table.get(f"{topic}@{group}", {})
        lag = sum(max(service.store.max_offset(topic, q) - o, 0) for q, o in committed.items())
        groups.append(
            {
                "group": group,
                "topic": topic,
                "outTps": round(traffic.get_rate(group, topic)[0], 2),
                "outMsgTotal": got.messages if got else 0,
                "outBytesTotal": got.bytes if got else 0,
                "lag": lag,
            }
        )
    return {"brokerName": service.config.broker_name, "topics": topics, "groups": groups}


def process_broker_traffic(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    return cmd.response(ResponseCode.SUCCESS, None, None, dumps(broker_traffic(service)))


def traffic_runtime_fields(service: BrokerService) -> dict[str, str]:
    """RocketMQ's runtime rate fields (messages per second over the last 10 s and the last minute)."""
    traffic = service.traffic
    put10, put60 = traffic.put_rate(seconds=SHORT_WINDOW_S), traffic.put_rate(seconds=MINUTE_S)
    get10, get60 = traffic.get_rate(seconds=SHORT_WINDOW_S), traffic.get_rate(seconds=MINUTE_S)
    return {
        "putTps": f"{put10[0]:.2f} {put60[0]:.2f}",
        "getTransferedTps": f"{get10[0]:.2f} {get60[0]:.2f}",
        "putBytesTps": f"{put10[1]:.2f} {put60[1]:.2f}",
        "getTransferedBytesTps": f"{get10[1]:.2f} {get60[1]:.2f}",
        "msgPutTotalSinceStart": str(sum(t.messages for t in traffic.put.values())),
        "msgGetTotalSinceStart": str(sum(t.messages for t in traffic.get.values())),
    }


async def process_runtime_info_with_traffic(
    service: BrokerService, conn: Connection, cmd: RemotingCommand
) -> RemotingCommand:
    reply = await process_runtime_info(service, conn, cmd)
    body: dict[str, Any] = dict(json.loads(reply.body))
    body.setdefault("table", {}).update(traffic_runtime_fields(service))
    reply.body = dumps(body)
    return reply


def process_get_broker_config(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    body = properties_text(config_table(service.config)).encode()
    return cmd.response(ResponseCode.SUCCESS, None, None, body)


def process_update_broker_config(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    changed = apply_runtime_update(service.config, parse_properties(cmd.body.decode(errors="replace")))
    if "brokerPermission" in changed:
        service.set_broker_permission(service.config.broker_permission)
    return cmd.response(ResponseCode.SUCCESS, f"updated {', '.join(f'{k}={v}' for k, v in changed.items())}")


# The processors' type (processors/__init__.py's ``Processor``, not imported: that module imports this one).
InspectProcessor = Callable[[BrokerService, Connection, RemotingCommand], RemotingCommand | Awaitable[RemotingCommand]]

INSPECT_PROCESSORS: dict[int, InspectProcessor] = {
    RequestCode.GET_PRODUCER_CONNECTION_LIST: process_producer_connections,
    RequestCode.GET_TOPIC_STATS_INFO: process_topic_stats,
    RequestCode.GET_BROKER_CONSUME_STATS: process_broker_traffic,
    RequestCode.GET_BROKER_RUNTIME_INFO: process_runtime_info_with_traffic,
    RequestCode.GET_BROKER_CONFIG: process_get_broker_config,
    RequestCode.UPDATE_BROKER_CONFIG: process_update_broker_config,
}
