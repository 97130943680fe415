"""Route data: TopicRouteData, QueueData, BrokerData and ClusterInfo JSON forms (reference section 2)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MASTER_ID = 0
GRPC_ADDRS_FIELD = "grpcAddrs"
"""BrokerData's krocket field: brokerId -> gRPC ``host:port`` of the brokers that serve 5.x clients
(``krocket.common.register_body``); written only when one does, ignored by RocketMQ's clients."""


@dataclass(slots=True)
class QueueData:
    broker_name: str
    read_queue_nums: int
    write_queue_nums: int
    perm: int
    topic_sys_flag: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "brokerName": self.broker_name,
            "readQueueNums": self.read_queue_nums,
            "writeQueueNums": self.write_queue_nums,
            "perm": self.perm,
            "topicSysFlag": self.topic_sys_flag,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> QueueData:
        return cls(
            d["brokerName"],
            int(d["readQueueNums"]),
            int(d["writeQueueNums"]),
            int(d["perm"]),
            int(d.get("topicSysFlag", 0)),
        )


@dataclass(slots=True)
class BrokerData:
    cluster: str
    broker_name: str
    broker_addrs: dict[int, str] = field(default_factory=dict)
    grpc_addrs: dict[int, str] = field(default_factory=dict)
    """brokerId -> gRPC endpoint, for the brokers that serve one."""

    def master_addr(self) -> str | None:
        return self.broker_addrs.get(MASTER_ID)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "cluster": self.cluster,
            "brokerName": self.broker_name,
            "brokerAddrs": _id_table_json(self.broker_addrs),
        }
        if self.grpc_addrs:
            data[GRPC_ADDRS_FIELD] = _id_table_json(self.grpc_addrs)
        return data

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BrokerData:
        return cls(
            d.get("cluster", ""),
            d["brokerName"],
            _id_table(d.get("brokerAddrs")),
            _id_table(d.get(GRPC_ADDRS_FIELD)),
        )


def _id_table_json(table: dict[int, str]) -> dict[str, str]:
    """A brokerId-keyed table as JSON: quoted keys, in id order."""
    return {str(k): v for k, v in sorted(table.items())}


def _id_table(value: Any) -> dict[int, str]:
    """A brokerId-keyed table from JSON (keys quoted or not); an absent one is empty."""
    return {int(k): str(v) for k, v in (value or {}).items()}


@dataclass(slots=True)
class TopicRouteData:
    queue_datas: list[QueueData] = field(default_factory=list)
    broker_datas: list[BrokerData] = field(default_factory=list)
    order_topic_conf: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "queueDatas": [q.to_json() for q in self.queue_datas],
            "brokerDatas": [b.to_json() for b in self.broker_datas],
            "filterServerTable": {},
        }
        if self.order_topic_conf:
            data["orderTopicConf"] = self.order_topic_conf
        return data

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TopicRouteData:
        return cls(
            [QueueData.from_json(q) for q in d.get("queueDatas") or []],
            [BrokerData.from_json(b) for b in d.get("brokerDatas") or []],
            d.get("orderTopicConf"),
        )

    def broker(self, broker_name: str) -> BrokerData | None:
        for b in self.broker_datas:
            if b.broker_name == broker_name:
                return b
        return None


# fastjson writes Map<Long, String> keys unquoted ({0:"addr"}) for old clients; quote them before parsing.
_UNQUOTED_KEY = re.compile(r"([{,])\s*(-?\d+)\s*:")


def loads_lenient(raw: bytes | str) -> Any:
    """Parse JSON that may carry fastjson's unquoted numeric map keys."""
    text = raw.decode() if isinstance(raw, bytes | bytearray) else raw
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(_UNQUOTED_KEY.sub(r'\1"\2":', text))


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
