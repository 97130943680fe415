"""PULL_MESSAGE replies: the frames the processor writes now (reads through ``queue_range``, the header from the
``pull_reply`` template) are byte for byte the frames of the earlier path (the entry-by-entry read, the reply
built with ``RemotingCommand.response`` and encoded by ``encode_parts``), on interleaved queues across segment
ends, tag filters, offsets out of range, empty queues and a slave's store."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from krocket.broker.processors.pull import _reply as pull_processor_reply
from krocket.broker.processors.pull_reply import pull_response
from krocket.broker.service import PullOutcome
from krocket.broker.store import MessageStore
from krocket.broker.store.reader import MessageReader
from krocket.common.codes import PULL_FLAG_COMMIT_OFFSET, PULL_FLAG_SUBSCRIPTION, PULL_FLAG_SUSPEND, ResponseCode
from krocket.common.headers import PullMessageHeader
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.remoting.command import SERIALIZE_ROCKETMQ, EncodedResponse, decode_frame, encode_parts

from tests.unit.broker.broker_rig import BrokerRig, make_rig, pull_request
from tests.unit.store.store_helpers import SEGMENT, body, props
from tests.unit.store.walk_reference import WalkReader


def earlier_reply(cmd: RemotingCommand, outcome: PullOutcome) -> RemotingCommand:
    """The reply as the processor built it before the template."""
    return cmd.response(
        outcome.code,
        outcome.remark,
        {
            "nextBeginOffset": outcome.next_begin_offset,
            "minOffset": outcome.min_offset,
            "maxOffset": outcome.max_offset,
            "suggestWhichBrokerId": outcome.suggest_broker_id,
        },
        outcome.body,
    )


def frame(reply: RemotingCommand) -> bytes:
    head, body_bytes = encode_parts(reply)
    return head + body_bytes


def earlier_frame(rig: BrokerRig, cmd: RemotingCommand) -> bytes:
    """The reply frame of the earlier path: the walk over the same store, the general encoder."""
    h = PullMessageHeader.from_fields(cmd.ext_fields)
    store = rig.store
    current = store.reader
    store.reader = cast(MessageReader, WalkReader(store.commitlog, store.queues))
    try:
        outcome = rig.service.pull(
            group=h.consumer_group,
            topic=h.topic,
            queue_id=h.queue_id,
            offset=h.queue_offset,
            max_msgs=h.max_msg_nums,
            expression=h.subscription if h.sys_flag & PULL_FLAG_SUBSCRIPTION else None,
            suspend_ms=h.suspend_timeout_millis if h.sys_flag & PULL_FLAG_SUSPEND else 0,
            commit_offset=h.commit_offset if h.sys_flag & PULL_FLAG_COMMIT_OFFSET else None,
        )
    finally:
        store.reader = current
    assert isinstance(outcome, PullOutcome)
    reply = earlier_reply(cmd, outcome)
    reply.opaque = cmd.opaque
    return frame(reply)


def new_reply(rig: BrokerRig, cmd: RemotingCommand) -> RemotingCommand:
    reply = rig.handler(cast(Connection, rig.conn), cmd)
    assert isinstance(reply, RemotingCommand)
    reply.opaque = cmd.opaque  # as the transport does
    return reply


def fill(store: MessageStore, topic: str, n: int, queues: int, run: int, size: int = 300) -> None:
    i = 0
    while i < n:
        q = (i // run) % queues
        items = [(body(i + k, size), props(i + k, tags=("TagA", "TagB", "TagC")[(i + k) % 3]), 0) for k in range(run)]
        store.put_messages(topic, q, items)
        i += run


def assert_same_frames(rig: BrokerRig, topic: str, queues: int) -> int:
    """Every pull shape from every offset (and past the end) answers the same frame both ways; returns how
    many of them found messages."""
    found = 0
    opaques = itertools.count(7)
    for queue_id in range(queues):
        hi = rig.store.max_offset(topic, queue_id)
        for offset, max_msgs, expression in itertools.product(
            [*range(0, hi + 1, 3), hi, hi + 1, hi + 40], [1, 32, 1024], ["*", "TagA", "TagA || TagB", "Nope"]
        ):
            cmd = pull_request(topic, queue_id, offset, expression, max_msg_nums=max_msgs)
            cmd.opaque = next(opaques) * 7919
            reply = new_reply(rig, cmd)
            assert frame(reply) == earlier_frame(rig, cmd), (queue_id, offset, max_msgs, expression)
            found += reply.code == ResponseCode.SUCCESS
    return found


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[BrokerRig]:
    rig = make_rig(tmp_path / "master")
    rig.topic("T", 3)
    fill(rig.store, "T", 150, queues=3, run=1)  # every queue's records apart
    fill(rig.store, "T", 150, queues=3, run=7)  # runs of adjacent records
    assert rig.store.max_phy_offset > SEGMENT  # across a segment end (a BLANK record)
    yield rig
    rig.store.close()


def test_pull_frames_are_the_earlier_paths_frames(filled: BrokerRig) -> None:
    filled.topic("Empty", 2)
    assert assert_same_frames(filled, "T", 3) > 0
    assert_same_frames(filled, "Empty", 2)


def test_a_slaves_pull_frames_are_the_earlier_paths_frames(filled: BrokerRig, tmp_path: Path) -> None:
    slave = make_rig(tmp_path / "slave", broker_id=1, broker_role="SLAVE")
    offset = 0
    while offset < filled.store.max_phy_offset:
        data = filled.store.read_raw(offset, 5000)
        slave.store.append_raw(data, offset)
        offset += len(data)
    try:
        assert assert_same_frames(slave, "T", 3) > 0  # the slave serves the topic before its config arrives
    finally:
        slave.store.close()


@pytest.mark.parametrize(
    ("code", "next_begin", "low", "high", "suggest", "opaque"),
    [
        (ResponseCode.SUCCESS, 32, 0, 100, 0, 1),
        (ResponseCode.SUCCESS, 2**40, 2**39, 2**41, 1, 2**31 - 1),
        (ResponseCode.PULL_NOT_FOUND, 0, 0, 0, 0, 0),
        (ResponseCode.PULL_OFFSET_MOVED, 5, 5, 9, 0, -3),
        (ResponseCode.PULL_RETRY_IMMEDIATELY, 800, 0, 1000, 0, 123456),
    ],
)
def test_the_template_writes_what_the_general_encoder_writes(
    code: int, next_begin: int, low: int, high: int, suggest: int, opaque: int
) -> None:
    cmd = RemotingCommand(11, opaque=opaque)
    outcome = PullOutcome(code, b"records" * 9, next_begin, low, high, suggest)
    reply = pull_response(cmd, code, next_begin, low, high, suggest, outcome.body)
    earlier = earlier_reply(cmd, outcome)
    assert frame(reply) == frame(earlier)
    assert (reply.code, reply.ext_fields, reply.remark, reply.flag) == (
        earlier.code,
        earlier.ext_fields,
        earlier.remark,
        earlier.flag,
    )
    decoded = decode_frame(frame(reply)[4:])
    assert (decoded.code, decoded.opaque, decoded.ext_fields) == (code, opaque, earlier.ext_fields)


def test_another_opaque_or_a_remark_or_binary_headers_take_the_general_encoder(filled: BrokerRig) -> None:
    reply = pull_response(RemotingCommand(11, opaque=5), 0, 1, 0, 2, 0, b"x")
    reply.opaque = 6  # the head holds opaque 5: the fields are encoded again
    assert decode_frame(frame(reply)[4:]).opaque == 6
    # An outcome with a remark and a ROCKETMQ-serialized request are answered by the general path.
    cmd = RemotingCommand(11, opaque=9)
    remarked = PullOutcome(ResponseCode.PULL_NOT_FOUND, b"", 3, 0, 3, 0, "a remark")
    general = pull_processor_reply(cmd, remarked)
    assert type(general) is not EncodedResponse and frame(general) == frame(earlier_reply(cmd, remarked))
    binary = pull_request("T", 1, 0)
    binary.serialize = SERIALIZE_ROCKETMQ
    answered = new_reply(filled, binary)
    assert type(answered) is not EncodedResponse and answered.serialize == SERIALIZE_ROCKETMQ
    assert frame(answered) == earlier_frame(filled, binary)
