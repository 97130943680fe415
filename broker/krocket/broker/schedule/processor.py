"""GET_ALL_DELAY_OFFSET (45): the master's delivery progress, which its slaves copy with the other metadata."""

from __future__ import annotations

from json import dumps

from krocket.broker.service import BrokerService
from krocket.common.codes import ResponseCode
from krocket.common.remoting import Connection, RemotingCommand

from .offsets import read_table


async def process_all_delay_offset(service: BrokerService, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    body = dumps(read_table(service.config.store_dir / "config")).encode()
    return cmd.response(ResponseCode.SUCCESS, None, None, body)
