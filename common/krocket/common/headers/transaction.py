"""Headers of END_TRANSACTION (37, producer -> broker) and CHECK_TRANSACTION_STATE (39, broker -> producer)."""

from __future__ import annotations

from dataclasses import dataclass

from krocket.common.headers.fields import RequestHeader


@dataclass(slots=True)
class EndTransactionHeader(RequestHeader):
    """END_TRANSACTION (37): the outcome of the half message stored at ``commit_log_offset``.
    ``commit_or_rollback`` is the sysFlag transaction type (8 commit, 12 rollback, 0 unknown). ``topic`` (the
    message's real topic, as RocketMQ 5 clients send it) is what the ACL checks PUB on."""

    producer_group: str
    tran_state_table_offset: int
    commit_log_offset: int
    commit_or_rollback: int
    from_transaction_check: bool = False
    msg_id: str = ""
    transaction_id: str | None = None
    topic: str | None = None


@dataclass(slots=True)
class CheckTransactionStateHeader(RequestHeader):
    """CHECK_TRANSACTION_STATE (39): the broker asks a producer of the group for a half message's outcome
    (the message itself is the request's body, one record)."""

    tran_state_table_offset: int
    commit_log_offset: int
    msg_id: str = ""
    transaction_id: str | None = None
    offset_msg_id: str = ""
