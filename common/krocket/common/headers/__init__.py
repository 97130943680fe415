"""Typed request headers (extFields) of the remoting requests krocket's client, broker and name server
share: each protocol header shape is defined here once, with its wire names and the defaults a server
assumes for what a request leaves out."""

from krocket.common.errors import HeaderError
from krocket.common.headers.broker import (
    ConsumerGroupHeader,
    CreateTopicHeader,
    DeleteTopicInBrokerHeader,
    GetEarliestMsgStoretimeHeader,
    GetMaxOffsetHeader,
    GetMinOffsetHeader,
    GetTopicConfigHeader,
    NotifyConsumerIdsChangedHeader,
    PullMessageHeader,
    QueryConsumerOffsetHeader,
    QueryMessageHeader,
    QueueHeader,
    SearchOffsetHeader,
    TopicHeader,
    UnregisterClientHeader,
    UpdateConsumerOffsetHeader,
    ViewMessageHeader,
)
from krocket.common.headers.fields import RequestHeader
from krocket.common.headers.inspect import (
    AddWritePermOfBrokerHeader,
    GetProducerConnectionListHeader,
    GetTopicStatsInfoHeader,
    WipeWritePermOfBrokerHeader,
)
from krocket.common.headers.namesrv import (
    BrokerIdentityHeader,
    DeleteTopicInNamesrvHeader,
    KVConfigHeader,
    NamespaceHeader,
    PutKVConfigHeader,
    RegisterBrokerHeader,
    RouteInfoHeader,
    UnregisterBrokerHeader,
)
from krocket.common.headers.send import SEND_LONG_NAMES, SEND_V2_NAMES, SendHeaderNames, SendMessageHeader
from krocket.common.headers.send_back import SEND_BACK_MAX_TIMES_VERSION, ConsumerSendMsgBackHeader

__all__ = [
    "BrokerIdentityHeader",
    "AddWritePermOfBrokerHeader",
    "GetProducerConnectionListHeader",
    "GetTopicStatsInfoHeader",
    "WipeWritePermOfBrokerHeader",
    "SEND_BACK_MAX_TIMES_VERSION",
    "SEND_LONG_NAMES",
    "SEND_V2_NAMES",
    "ConsumerGroupHeader",
    "ConsumerSendMsgBackHeader",
    "CreateTopicHeader",
    "DeleteTopicInBrokerHeader",
    "DeleteTopicInNamesrvHeader",
    "GetEarliestMsgStoretimeHeader",
    "GetMaxOffsetHeader",
    "GetMinOffsetHeader",
    "GetTopicConfigHeader",
    "HeaderError",
    "KVConfigHeader",
    "NamespaceHeader",
    "NotifyConsumerIdsChangedHeader",
    "PullMessageHeader",
    "PutKVConfigHeader",
    "QueryConsumerOffsetHeader",
    "QueryMessageHeader",
    "QueueHeader",
    "RegisterBrokerHeader",
    "RequestHeader",
    "RouteInfoHeader",
    "SearchOffsetHeader",
    "SendHeaderNames",
    "SendMessageHeader",
    "TopicHeader",
    "UnregisterBrokerHeader",
    "UnregisterClientHeader",
    "UpdateConsumerOffsetHeader",
    "ViewMessageHeader",
]
