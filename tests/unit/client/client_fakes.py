"""Tiny in-process name server and broker speaking just enough remoting to exercise the client."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from krocket.common.batch import decode_batch
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.message import PROPERTY_TAGS, decode_properties, encode_properties, java_string_hash
from krocket.common.message_id import offset_msg_id, pack_host
from krocket.common.record import encode_record
from krocket.common.remoting import Connection, RemotingCommand, RemotingServer
from krocket.common.route import BrokerData, QueueData, TopicRouteData

OK = ResponseCode.SUCCESS


class FakeNamesrv:
    def __init__(self) -> None:
        self.brokers: list[FakeBroker] = []
        self.server = RemotingServer(self._serve, "127.0.0.1", 0)
        self.requests: list[int] = []

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def route(self, topic: str) -> TopicRouteData | None:
        qds = [
            QueueData(b.name, b.topics[topic].queues, b.topics[topic].queues, b.topics[topic].perm)
            for b in self.brokers
            if topic in b.topics and b.online
        ]
        if not qds:
            return None
        bds = [
            BrokerData("c", b.name, {0: b.addr})
            for b in self.brokers
            if b.online and any(q.broker_name == b.name for q in qds)
        ]
        return TopicRouteData(qds, bds)

    async def _serve(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        self.requests.append(cmd.code)
        if cmd.code == RequestCode.GET_ROUTEINFO_BY_TOPIC:
            route = self.route(cmd.ext_fields["topic"])
            if route is None:
                return cmd.response(ResponseCode.TOPIC_NOT_EXIST, "no route")
            return cmd.response(OK, body=json.dumps(route.to_json()).encode())
        if cmd.code == RequestCode.GET_BROKER_CLUSTER_INFO:
            body = {
                "brokerAddrTable": {b.name: BrokerData("c", b.name, {0: b.addr}).to_json() for b in self.brokers},
                "clusterAddrTable": {"c": [b.name for b in self.brokers]},
            }
            return cmd.response(OK, body=json.dumps(body).encode())
        if cmd.code == RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER:
            topics = sorted({t for b in self.brokers for t in b.topics})
            return cmd.response(OK, body=json.dumps({"topicList": topics}).encode())
        if cmd.code == RequestCode.DELETE_TOPIC_IN_NAMESRV:
            return cmd.response(OK)
        return cmd.response(ResponseCode.REQUEST_CODE_NOT_SUPPORTED, "no")


@dataclass
class FakeTopic:
    queues: int
    perm: int = 6
    logs: list[list[bytes]] = field(default_factory=list)
    tags: list[list[str | None]] = field(default_factory=list)
    stored: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.logs = [[] for _ in range(self.queues)]
        self.tags = [[] for _ in range(self.queues)]
        self.stored = [[] for _ in range(self.queues)]


class FakeBroker:
    def __init__(self, name: str, auto_create: bool = True) -> None:
        self.name = name
        self.auto_create = auto_create
        self.online = True
        self.fail_sends = 0
        self.topics: dict[str, FakeTopic] = {}
        if auto_create:
            self.topics["TBW102"] = FakeTopic(8)
        self.offsets: dict[tuple[str, str, int], int] = {}
        self.groups: dict[str, dict[int, tuple[str, Connection]]] = {}
        self.server = RemotingServer(self._serve, "127.0.0.1", 0, on_connect=self._on_connect)
        self._arrived = asyncio.Condition()
        self._phys = 0
        self.sent_headers: list[dict[str, str]] = []
        self.heartbeats: list[dict] = []

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def _on_connect(self, conn: Connection) -> None:
        conn.on_close(self._closed)

    def _closed(self, conn: Connection) -> None:
        for group, members in self.groups.items():
            if members.pop(id(conn), None) is not None:
                self._notify(group)

    def _notify(self, group: str) -> None:
        for _, conn in self.groups.get(group, {}).values():
            if conn.is_open:
                cmd = RemotingCommand(RequestCode.NOTIFY_CONSUMER_IDS_CHANGED, ext_fields={"consumerGroup": group})
                asyncio.get_running_loop().create_task(conn.oneway(cmd))

    def _store(
        self, topic: str, queue_id: int, body: bytes, props: dict[str, str], sys_flag: int, flag: int
    ) -> tuple[int, str]:
        t = self.topics[topic]
        offset = len(t.logs[queue_id])
        host = pack_host(self.addr)
        record = encode_record(
            topic=topic.encode(),
            body=body,
            properties=encode_properties(props),
            queue_id=queue_id,
            flag=flag,
            queue_offset=offset,
            physical_offset=self._phys,
            sys_flag=sys_flag,
            born_timestamp=int(time.time() * 1000),
            born_host=host,
            store_timestamp=int(time.time() * 1000),
            store_host=host,
        )
        msg_id = offset_msg_id(host, self._phys)
        self._phys += len(record)
        t.logs[queue_id].append(record)
        t.tags[queue_id].append(props.get(PROPERTY_TAGS))
        t.stored[queue_id].append(int(time.time() * 1000))
        return offset, msg_id

    async def _serve(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand | None:
        if not self.online:
            conn.close()
            return None
        ext = cmd.ext_fields
        code = cmd.code
        if code in (RequestCode.SEND_MESSAGE_V2, RequestCode.SEND_BATCH_MESSAGE):
            self.sent_headers.append(dict(ext))
            if self.fail_sends:
                self.fail_sends -= 1
                return cmd.response(ResponseCode.SYSTEM_ERROR, "injected failure")
            topic, queue_id = ext["b"], int(ext["e"])
            if topic not in self.topics:
                if not self.auto_create:
                    return cmd.response(ResponseCode.TOPIC_NOT_EXIST, "no topic")
                self.topics[topic] = FakeTopic(int(ext["d"]))
            queue_id %= self.topics[topic].queues
            if code == RequestCode.SEND_BATCH_MESSAGE:
                results = [
                    self._store(topic, queue_id, i.body, i.properties, 0, i.flag) for i in decode_batch(cmd.body)
                ]
            else:
                results = [
                    self._store(topic, queue_id, cmd.body, decode_properties(ext["i"]), int(ext["f"]), int(ext["h"]))
                ]
            async with self._arrived:
                self._arrived.notify_all()
            return cmd.response(
                OK,
                ext_fields={
                    "msgId": ",".join(r[1] for r in results),
                    "queueId": queue_id,
                    "queueOffset": results[0][0],
                },
            )
        if code == RequestCode.PULL_MESSAGE:
            return await self._pull(cmd)
        if code in (RequestCode.GET_MAX_OFFSET, RequestCode.GET_MIN_OFFSET, RequestCode.SEARCH_OFFSET_BY_TIMESTAMP):
            t = self.topics.get(ext["topic"])
            q = int(ext["queueId"])
            if code == RequestCode.GET_MIN_OFFSET or t is None:
                value = 0
            elif code == RequestCode.GET_MAX_OFFSET:
                value = len(t.logs[q])
            else:
                ts = int(ext["timestamp"])
                value = next((i for i, s in enumerate(t.stored[q]) if s >= ts), len(t.stored[q]))
            return cmd.response(OK, ext_fields={"offset": value})
        if code == RequestCode.QUERY_CONSUMER_OFFSET:
            key = (ext["consumerGroup"], ext["topic"], int(ext["queueId"]))
            if key not in self.offsets:
                return cmd.response(ResponseCode.QUERY_NOT_FOUND, "none")
            return cmd.response(OK, ext_fields={"offset": self.offsets[key]})
        if code == RequestCode.UPDATE_CONSUMER_OFFSET:
            self.offsets[(ext["consumerGroup"], ext["topic"], int(ext["queueId"]))] = int(ext["commitOffset"])
            return cmd.response(OK)
        if code == RequestCode.HEART_BEAT:
            data = json.loads(cmd.body)
            self.heartbeats.append(data)
            for consumer in data.get("consumerDataSet", []):
                members = self.groups.setdefault(consumer["groupName"], {})
                new = id(conn) not in members
                members[id(conn)] = (data["clientID"], conn)
                if new:
                    self._notify(consumer["groupName"])
            return cmd.response(OK)
        if code == RequestCode.UNREGISTER_CLIENT:
            group = ext.get("consumerGroup")
            if group and self.groups.get(group, {}).pop(id(conn), None) is not None:
                self._notify(group)
            return cmd.response(OK)
        if code == RequestCode.GET_CONSUMER_LIST_BY_GROUP:
            ids = sorted({cid for cid, _ in self.groups.get(ext["consumerGroup"], {}).values()})
            return cmd.response(OK, body=json.dumps({"consumerIdList": ids}).encode())
        if code == RequestCode.UPDATE_AND_CREATE_TOPIC:
            self.topics[ext["topic"]] = FakeTopic(int(ext["writeQueueNums"]))
            return cmd.response(OK)
        if code == RequestCode.DELETE_TOPIC_IN_BROKER:
            self.topics.pop(ext["topic"], None)
            return cmd.response(OK)
        return cmd.response(ResponseCode.REQUEST_CODE_NOT_SUPPORTED, "no")

    async def _pull(self, cmd: RemotingCommand) -> RemotingCommand:
        ext = cmd.ext_fields
        topic, q, offset = ext["topic"], int(ext["queueId"]), int(ext["queueOffset"])
        codes = (
            None
            if ext.get("subscription", "*") == "*"
            else {java_string_hash(t.strip()) for t in ext["subscription"].split("||")}
        )
        deadline = time.monotonic() + int(ext.get("suspendTimeoutMillis", "0")) / 1000
        while True:
            t = self.topics.get(topic)
            if t is None:
                return cmd.response(
                    ResponseCode.PULL_NOT_FOUND, "no topic", {"nextBeginOffset": offset, "minOffset": 0, "maxOffset": 0}
                )
            size = len(t.logs[q])
            if offset > size:
                return cmd.response(
                    ResponseCode.PULL_OFFSET_MOVED,
                    "moved",
                    {"nextBeginOffset": size, "minOffset": 0, "maxOffset": size},
                )
            picked = []
            end = offset
            while end < size and len(picked) < int(ext["maxMsgNums"]):
                tag = t.tags[q][end]
                if codes is None or (tag is not None and java_string_hash(tag) in codes):
                    picked.append(t.logs[q][end])
                end += 1
            fields = {"nextBeginOffset": end, "minOffset": 0, "maxOffset": size, "suggestWhichBrokerId": 0}
            if picked:
                return cmd.response(OK, ext_fields=fields, body=b"".join(picked))
            if end > offset:
                return cmd.response(ResponseCode.PULL_RETRY_IMMEDIATELY, "filtered", fields)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return cmd.response(ResponseCode.PULL_NOT_FOUND, "none", fields)
            async with self._arrived:
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    pass


class FakeCluster:
    def __init__(self, broker_names: tuple[str, ...] = ("broker-a", "broker-b"), auto_create: bool = True) -> None:
        self.namesrv = FakeNamesrv()
        self.brokers = [FakeBroker(n, auto_create) for n in broker_names]
        self.namesrv.brokers = self.brokers

    @property
    def namesrv_addr(self) -> str:
        return self.namesrv.addr

    async def start(self) -> None:
        await self.namesrv.server.start()
        for b in self.brokers:
            await b.server.start()

    async def stop(self) -> None:
        for b in self.brokers:
            await b.server.close()
        await self.namesrv.server.close()

    def create_topic(self, topic: str, queues: int = 4) -> None:
        for b in self.brokers:
            b.topics[topic] = FakeTopic(queues)
