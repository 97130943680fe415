"""LOCK_BATCH_MQ (41) and UNLOCK_BATCH_MQ (42): orderly consumers' queue locks, thin over ``RebalanceLockManager``."""

from __future__ import annotations

from krocket.broker.service import BrokerService
from krocket.common.codes import ResponseCode
from krocket.common.lock_body import LockBatchRequest, lock_ok_body
from krocket.common.remoting import Connection, RemotingCommand


def process_lock_batch(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    req = LockBatchRequest.from_body(cmd.body)
    granted = service.locks.try_lock_batch(req.consumer_group, req.client_id, req.queues)
    return cmd.response(ResponseCode.SUCCESS, None, None, lock_ok_body(granted))


def process_unlock_batch(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    req = LockBatchRequest.from_body(cmd.body)
    service.locks.unlock_batch(req.consumer_group, req.client_id, req.queues)
    return cmd.response(ResponseCode.SUCCESS)
