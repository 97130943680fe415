"""END_TRANSACTION (37): a producer's outcome for a half message (commit re-puts it to its real topic, rollback
only records the op). RocketMQ's clients send it oneway; krocket's waits for the answer."""

from __future__ import annotations

from krocket.broker.service import BrokerService
from krocket.common.codes import ResponseCode
from krocket.common.errors import ServiceNotAvailableError
from krocket.common.headers.transaction import EndTransactionHeader
from krocket.common.remoting import Connection, RemotingCommand


def process_end_transaction(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    transactions = service.transactions
    if transactions is None or service.config.is_slave:
        raise ServiceNotAvailableError(
            f"broker {service.config.broker_name} id {service.config.broker_id} does not decide transactions; "
            "send END_TRANSACTION to its master"
        )
    header = EndTransactionHeader.from_fields(cmd.ext_fields)
    done = transactions.end(header)
    return cmd.response(ResponseCode.SUCCESS, done)
