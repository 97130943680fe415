"""Sends built by hand, for what krocket.client would refuse: any sysFlag, any properties text, any batch."""

from __future__ import annotations

from krocket.common.codes import RequestCode
from krocket.common.headers import SendMessageHeader
from krocket.common.remoting import ConnectionPool, RemotingCommand


def send_header(topic: str, sys_flag: int = 0, properties: str = "", flag: int = 0, batch: bool = False) -> dict:
    header = SendMessageHeader(
        producer_group="door-producer",
        topic=topic,
        default_topic="TBW102",
        default_topic_queue_nums=4,
        queue_id=0,
        sys_flag=sys_flag,
        born_timestamp=1_700_000_000_000,
        flag=flag,
        properties=properties,
        reconsume_times=0,
        unit_mode=False,
        batch=batch,
    )
    return header.to_v2_fields()


async def raw_send(
    pool: ConnectionPool,
    addr: str,
    topic: str,
    body: bytes,
    sys_flag: int = 0,
    properties: str = "",
    flag: int = 0,
    code: int = RequestCode.SEND_MESSAGE_V2,
) -> RemotingCommand:
    """One SEND_MESSAGE_V2 (or, with ``code``, SEND_BATCH_MESSAGE: ``body`` is then a batch body) to queue 0."""
    fields = send_header(topic, sys_flag, properties, flag, batch=code == RequestCode.SEND_BATCH_MESSAGE)
    return await pool.request(addr, RemotingCommand(int(code), ext_fields=fields, body=body), 5.0)
