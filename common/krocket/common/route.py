"""Route data: TopicRouteData, QueueData, BrokerData and ClusterInfo JSON forms (reference section 2)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MASTER_ID = 0


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

    def master_addr(self) -> str | None:
        return self.broker_addrs.get(MASTER_ID)

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "brokerName": self.broker_name,
            "brokerAddrs": {str(k): v for k, v in sorted(self.broker_addrs.items())},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BrokerData:
        return cls(
            d.get("cluster", ""), d["brokerName"], {int(k): str(v) for k, v in (d.get("brokerAddrs") or {}).items()}
        )


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
