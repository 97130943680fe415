"""Transactions on the broker: half messages, their outcomes (END_TRANSACTION) and the check-back service."""

from krocket.broker.transaction.half import committed_message, half_message
from krocket.broker.transaction.service import CheckRequest, TransactionService, run_checks

__all__ = ["CheckRequest", "TransactionService", "committed_message", "half_message", "run_checks"]
