"""The send processor's door, in process over a real store: refused sends store nothing, accepted ones are
stored the way they read back (IPv6 host bits cleared, the producer's address in the IPv4 layout)."""

from __future__ import annotations

import zlib

import pytest

from krocket.common.batch import encode_batch
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.record import decode_records

from tests.unit.broker.broker_rig import BrokerRig, FakeConn, pull_request, send_header, send_v2


async def _pulled(rig: BrokerRig) -> list:
    pulled = await rig.answer(pull_request("T", 0))
    return decode_records(pulled.body) if pulled.code == ResponseCode.SUCCESS else []


@pytest.mark.parametrize(
    ("overrides", "body", "code", "remark"),
    [
        ({"sys_flag": 0x4}, b"x", ResponseCode.MESSAGE_ILLEGAL, "TRAN_MSG"),
        ({"sys_flag": 0x8}, b"x", ResponseCode.NO_PERMISSION, "END_TRANSACTION"),
        ({"sys_flag": 0x4, "properties": "TRAN_MSG\x01true\x02"}, b"x", ResponseCode.MESSAGE_ILLEGAL, "PGROUP"),
        ({"sys_flag": 0x40}, b"x", ResponseCode.MESSAGE_ILLEGAL, "sysFlag"),
        ({"sys_flag": 0x1}, b"not zlib", ResponseCode.MESSAGE_ILLEGAL, "does not inflate"),
        ({"properties": "a\x01b\x01c\x02"}, b"x", ResponseCode.MESSAGE_ILLEGAL, "property 'a'"),
        ({"properties": "k\x01\ud800\x02"}, b"x", ResponseCode.MESSAGE_ILLEGAL, "UTF-8"),
        ({"flag": 2**31}, b"x", ResponseCode.MESSAGE_ILLEGAL, "flag"),
        ({"reconsume_times": -(2**31) - 1}, b"x", ResponseCode.MESSAGE_ILLEGAL, "reconsumeTimes"),
    ],
)
async def test_refused_sends_store_nothing(
    rig: BrokerRig, overrides: dict, body: bytes, code: int, remark: str
) -> None:
    rig.topic("T")
    response = await rig.answer(send_v2(send_header("T", 0, None, **overrides), body))
    assert response.code == code and remark in (response.remark or "")
    assert rig.service.sent_messages == 0 and await _pulled(rig) == []


async def test_ipv6_host_bits_are_cleared_and_the_host_recorded_in_the_ipv4_layout(rig: BrokerRig) -> None:
    rig.topic("T")
    for sys_flag, peer in ((0x10, "[2001:db8::7]:4000"), (0x30, "::ffff:10.1.2.3:4001"), (0x21, "::1:4002")):
        body = zlib.compress(b"z" * 100) if sys_flag & 0x1 else b"v6"
        response = await rig.answer(send_v2(send_header("T", 0, None, sys_flag=sys_flag), body), FakeConn(peer))
        assert response.code == ResponseCode.SUCCESS, response.remark
    msgs = await _pulled(rig)
    assert [(m.sys_flag, m.born_host) for m in msgs] == [
        (0, "0.0.0.0:4000"),
        (0, "10.1.2.3:4001"),
        (1, "127.0.0.1:4002"),
    ]
    assert msgs[2].body == b"z" * 100


async def test_a_batch_is_refused_whole_when_one_message_is_bad(rig: BrokerRig) -> None:
    rig.topic("T")
    bad = encode_batch([(b"ok", {"a": "1"}, 0), (b"bad", {"a": "1", "": "2"}, 0)])
    cmd = send_v2(send_header("T", 0, None, batch=True), bad, code=RequestCode.SEND_BATCH_MESSAGE)
    response = await rig.answer(cmd)
    assert response.code == ResponseCode.MESSAGE_ILLEGAL and "property" in (response.remark or "")
    compressed_bad = encode_batch([(zlib.compress(b"fine"), {}, 0), (b"raw", {}, 0)])
    cmd = send_v2(send_header("T", 0, None, batch=True, sys_flag=0x1), compressed_bad, RequestCode.SEND_BATCH_MESSAGE)
    response = await rig.answer(cmd)
    assert response.code == ResponseCode.MESSAGE_ILLEGAL and "inflate" in (response.remark or "")
    assert await _pulled(rig) == []
