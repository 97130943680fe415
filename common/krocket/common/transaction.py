"""RocketMQ's transaction facts: the system topics half messages and their outcomes live in, the broker's
internal group that records check progress, and the op record's tag."""

from __future__ import annotations

import enum

from krocket.common.record import (
    SYSFLAG_TRANSACTION_COMMIT,
    SYSFLAG_TRANSACTION_ROLLBACK,
)

HALF_TOPIC = "RMQ_SYS_TRANS_HALF_TOPIC"  # half messages wait here (queue 0) for their outcome
OP_HALF_TOPIC = "RMQ_SYS_TRANS_OP_HALF_TOPIC"  # one op record per decided half message (queue 0)
CHECK_MAX_TIME_TOPIC = "TRANS_CHECK_MAX_TIME_TOPIC"  # half messages checked transactionCheckMax times
SYSTEM_GROUP = "CID_RMQ_SYS_TRANS"  # the broker's consumer group over the half and op topics
OP_REMOVE_TAG = "d"  # the tag of an op record; its body is the half message's queue offset, in decimal
TRANSACTION_TOPICS = (HALF_TOPIC, OP_HALF_TOPIC, CHECK_MAX_TIME_TOPIC)


class TransactionState(enum.Enum):
    """A local transaction's outcome, as a producer's callbacks answer it."""

    COMMIT = "COMMIT_MESSAGE"
    ROLLBACK = "ROLLBACK_MESSAGE"
    UNKNOWN = "UNKNOW"  # RocketMQ's spelling

    @property
    def commit_or_rollback(self) -> int:
        """END_TRANSACTION's ``commitOrRollback``: the sysFlag transaction type (0 for unknown)."""
        if self is TransactionState.COMMIT:
            return SYSFLAG_TRANSACTION_COMMIT
        if self is TransactionState.ROLLBACK:
            return SYSFLAG_TRANSACTION_ROLLBACK
        return 0
