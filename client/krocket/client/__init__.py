"""krocket's RocketMQ 4.x client: asyncio at the core, blocking wrappers in ``krocket.client.sync``.

async with Producer("my-producers", "127.0.0.1:9876") as producer:
    result = await producer.send(Message("orders", b"hello", tags="TagA"))
"""

from krocket.common.acl import Credentials
from krocket.common.message import Message, MessageExt

from .admin import Admin, ClusterInfo, QueueProgress
from .consume_orderly import OrderlyStatus
from .producer import Producer
from .pull_consumer import PullConsumer
from .push_consumer import PushConsumer
from .rebalance import allocate_averagely
from .selector import select_by_hash
from .sync import SyncAdmin, SyncProducer, SyncPullConsumer, SyncPushConsumer
from .transaction_producer import SyncTransactionProducer, TransactionProducer, TransactionSendResult, TransactionState
from .types import (
    ConsumeFrom,
    ConsumeStatus,
    MessageModel,
    MessageQueue,
    PullResult,
    PullStatus,
    SendResult,
    SendStatus,
)

__all__ = [
    "Admin",
    "ClusterInfo",
    "ConsumeFrom",
    "ConsumeStatus",
    "Credentials",
    "Message",
    "MessageExt",
    "MessageModel",
    "MessageQueue",
    "OrderlyStatus",
    "Producer",
    "PullConsumer",
    "PullResult",
    "PullStatus",
    "PushConsumer",
    "QueueProgress",
    "SendResult",
    "SendStatus",
    "SyncAdmin",
    "SyncProducer",
    "SyncPullConsumer",
    "SyncPushConsumer",
    "SyncTransactionProducer",
    "TransactionProducer",
    "TransactionSendResult",
    "TransactionState",
    "allocate_averagely",
    "select_by_hash",
]
