"""Headers of the mqadmin inspection and broker control requests: producer connections (204), topic stats (202),
broker traffic (317), write permission of a broker on the name servers (205, 327)."""

from __future__ import annotations

from dataclasses import dataclass

from krocket.common.headers.fields import RequestHeader


@dataclass(slots=True)
class GetProducerConnectionListHeader(RequestHeader):
    """GET_PRODUCER_CONNECTION_LIST (204)."""

    producer_group: str


@dataclass(slots=True)
class GetTopicStatsInfoHeader(RequestHeader):
    """GET_TOPIC_STATS_INFO (202): each queue's min and max offset and last update time."""

    topic: str


@dataclass(slots=True)
class BrokerNameHeader(RequestHeader):
    """WIPE_WRITE_PERM_OF_BROKER (205) and ADD_WRITE_PERM_OF_BROKER (327), admin to name server."""

    broker_name: str


WipeWritePermOfBrokerHeader = BrokerNameHeader
AddWritePermOfBrokerHeader = BrokerNameHeader

# Response header fields: how many topics' queue data changed.
WIPE_TOPIC_COUNT = "wipeTopicCount"
ADD_TOPIC_COUNT = "addTopicCount"
