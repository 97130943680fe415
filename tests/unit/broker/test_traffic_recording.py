"""What the processors and the send fast path record into ``service.traffic`` (the per-topic and per-group series
of /metrics): the same totals whichever path serves a send, split by topic even when one read stores to several,
commit log bytes that add up to the log's end, pulls answered at once and after a long poll, sends back, and the
series forgotten when a topic or group is deleted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from krocket.broker.fastpath import FastSendPath, Serve, pure
from krocket.common.batch import encode_batch
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.headers import ConsumerSendMsgBackHeader, DeleteTopicInBrokerHeader
from krocket.common.headers.groups import DeleteSubscriptionGroupHeader
from krocket.common.message_id import decode_offset_msg_id
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.remoting.command import MAX_FRAME_BYTES
from krocket.common.topic import TopicConfig

from tests.unit.broker.broker_rig import BrokerRig, make_rig, pull_request, request, send_header, send_v2
from tests.unit.broker.test_fastpath_golden import FIXED_NOW_S, RecordingTransport, _reads, _replies, golden_frames

Totals = dict[str, tuple[int, int]]


def _serves() -> list[Any]:
    serves = [pytest.param(pure.serve, id="python")]
    try:
        from krocket.broker.fastpath import _cserve  # type: ignore[attr-defined]
    except ImportError:
        return serves
    return [*serves, pytest.param(_cserve.serve, id="c")]


async def _golden_traffic(tmp_path: Path, reads: list[bytes], serve: Serve | None, expected: int) -> tuple[Totals, int]:
    rig: BrokerRig = make_rig(tmp_path, auto_create_topic_enable=True)
    rig.topics.upsert(TopicConfig("GoldenA", 3, 3))
    rig.topics.upsert(TopicConfig("GoldenB", 2, 4))
    store = rig.store
    store.space.interval_s = 3600.0
    store.space.sample()

    def handle(conn: Connection, cmd: RemotingCommand) -> Any:
        store.hold_commit()
        return rig.handler(conn, cmd)

    fast = FastSendPath(rig.service, MAX_FRAME_BYTES, serve=serve) if serve is not None else None
    conn = Connection(handle, before_reply=store.commit, fast_path=fast)
    transport = RecordingTransport()
    conn.connection_made(transport)
    for data in reads:
        conn.data_received(data)
        await asyncio.sleep(0)
    deadline = time.monotonic() + 10
    while len(_replies(bytes(transport.data))) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    totals = {topic: (t.messages, t.bytes) for topic, t in rig.service.traffic.put.items()}
    assert sum(m for m, _ in totals.values()) == rig.service.sent_messages
    wrote = store.commitlog.wrote
    if fast is not None:
        assert fast.served > 0
    store.close()
    return totals, wrote


@pytest.mark.parametrize("how", ["one read", "random reads"])
@pytest.mark.parametrize("serve", _serves())
async def test_the_fast_path_records_what_todays_path_does_topic_by_topic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Serve, how: str
) -> None:
    monkeypatch.setattr(time, "time", lambda: FIXED_NOW_S)
    frames = golden_frames()
    reads = _reads(b"".join(frames), frames, how)
    slow, slow_end = await _golden_traffic(tmp_path / "slow", reads, None, len(frames))
    fast, fast_end = await _golden_traffic(tmp_path / "fast", reads, serve, len(frames))
    assert {"GoldenA", "GoldenB"} <= set(slow)
    assert fast == slow
    # Every stored byte is some topic's: records, and the blanks that end a segment (on the general path).
    assert sum(b for _, b in slow.values()) == slow_end == fast_end


async def _send(rig: BrokerRig, topic: str, body: bytes, tags: str | None = "TagA") -> int:
    response = await rig.answer(send_v2(send_header(topic, 0, tags), body))
    assert response.code == ResponseCode.SUCCESS, response.remark
    return decode_offset_msg_id(response.ext_fields["msgId"])[1]


async def test_single_and_batch_sends_record_the_topic_and_the_bytes_stored(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.topic("T")
    await _send(rig, "T", b"one")
    after_one = rig.store.commitlog.wrote
    batch = encode_batch([(f"b{i}".encode(), {}, 0) for i in range(3)])
    header = send_header("T", 0, None, batch=True)
    response = await rig.answer(send_v2(header, batch, RequestCode.SEND_BATCH_MESSAGE))
    assert response.code == ResponseCode.SUCCESS, response.remark
    put = rig.service.traffic.put["T"]
    assert (put.messages, put.bytes) == (4, rig.store.commitlog.wrote)
    assert 0 < after_one < put.bytes
    rig.store.close()


async def test_pulls_record_the_group_and_topic_at_once_and_after_a_long_poll(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.topic("T", queues=1)
    for i, tag in enumerate(["TagA", "TagB", "TagA"]):
        await _send(rig, "T", f"m{i}".encode(), tags=tag)
    found = await rig.answer(pull_request("T", expression="TagA", group="cg"))
    assert found.code == ResponseCode.SUCCESS
    got = rig.service.traffic.get[("cg", "T")]
    assert (got.messages, got.bytes) == (2, len(found.body))  # the filtered-out one is not served
    nothing = await rig.answer(pull_request("T", offset=3, group="cg"))
    assert nothing.code == ResponseCode.PULL_NOT_FOUND
    assert (got.messages, got.bytes) == (2, len(found.body))

    polled = asyncio.ensure_future(rig.answer(pull_request("T", offset=3, suspend_ms=5000, group="cg")))
    deadline = time.monotonic() + 5
    while rig.polling.suspended() == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await _send(rig, "T", b"late")
    woken = await asyncio.wait_for(polled, 5)
    assert woken.code == ResponseCode.SUCCESS
    assert (got.messages, got.bytes) == (3, len(found.body) + len(woken.body))
    rig.store.close()


async def test_a_send_back_records_the_retry_topic(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.topic("Orders")
    offset = await _send(rig, "Orders", b"poison")
    before = rig.store.commitlog.wrote
    header = ConsumerSendMsgBackHeader(offset=offset, group="cg")
    cmd = RemotingCommand(RequestCode.CONSUMER_SEND_MSG_BACK, opaque=7, ext_fields=header.to_fields(), version=63)
    assert (await rig.answer(cmd)).code == ResponseCode.SUCCESS
    retry = rig.service.traffic.put["%RETRY%cg"]
    assert (retry.messages, retry.bytes) == (1, rig.store.commitlog.wrote - before)
    assert rig.service.traffic.put["Orders"].messages == 1
    rig.store.close()


async def test_deleting_a_topic_or_a_group_forgets_its_series(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.topic("T")
    rig.topic("U")
    for topic in ("T", "U"):
        await _send(rig, topic, b"x")
        for group in ("g1", "g2"):
            assert (await rig.answer(pull_request(topic, group=group))).code == ResponseCode.SUCCESS
    traffic = rig.service.traffic
    deleted = await rig.answer(request(RequestCode.DELETE_TOPIC_IN_BROKER, DeleteTopicInBrokerHeader(topic="T")))
    assert deleted.code == ResponseCode.SUCCESS
    assert set(traffic.put) == {"U"} and set(traffic.get) == {("g1", "U"), ("g2", "U")}
    group = DeleteSubscriptionGroupHeader(group_name="g1")
    assert (await rig.answer(request(RequestCode.DELETE_SUBSCRIPTIONGROUP, group))).code == ResponseCode.SUCCESS
    assert set(traffic.get) == {("g2", "U")}
    rig.store.close()
