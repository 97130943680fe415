"""5.x consuming over gRPC driven with krocket's own stubs: what the SDKs would not send is tried too (bad invisible
times, SQL filters, forged and stale receipt handles), long polling's two ends (nothing: MESSAGE_NOT_FOUND before
the deadline; a send during the poll: delivered at once), a zero invisible time, the DLQ forward and the
assignments of normal and FIFO groups."""

from __future__ import annotations

import asyncio
import time

import pytest
from google.protobuf.duration_pb2 import Duration

from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.grpc.protocol import service_pb2 as rpc
from krocket.broker.grpc.protocol import service_pb2_grpc as rpc_grpc
from krocket.client import Admin
from krocket.common.subscription_group import SubscriptionGroupConfig

from tests.conformance.test_rocketmq_cpp_client import read_all
from tests.integration.test_grpc_service import CLIENT, message, stub
from tests.integration.test_grpc_service import cluster as cluster  # noqa: F401 - the module fixture
from tests.support.cluster import LocalCluster, create_topic


def seconds(value: float) -> Duration:
    out = Duration()
    out.FromMilliseconds(int(value * 1000))
    return out


def receive_request(topic: str, group: str, **fields: object) -> rpc.ReceiveMessageRequest:
    request = rpc.ReceiveMessageRequest(
        group=pb.Resource(name=group),
        message_queue=pb.MessageQueue(topic=pb.Resource(name=topic), id=-1),
        filter_expression=pb.FilterExpression(type=pb.TAG, expression="*"),
        batch_size=32,
    )
    for key, value in fields.items():
        if isinstance(value, Duration):
            getattr(request, key).CopyFrom(value)
        elif isinstance(value, pb.FilterExpression):
            request.filter_expression.CopyFrom(value)
        else:
            setattr(request, key, value)
    return request


async def receive(
    s: rpc_grpc.MessagingServiceStub, topic: str, group: str, **fields: object
) -> tuple[pb.Status, list[pb.Message]]:
    fields.setdefault("invisible_duration", seconds(10))
    fields.setdefault("long_polling_timeout", seconds(1))
    status, messages = None, []
    async for response in s.ReceiveMessage(receive_request(topic, group, **fields), metadata=CLIENT, timeout=30):
        kind = response.WhichOneof("content")
        if kind == "status":
            status = response.status
        elif kind == "message":
            messages.append(response.message)
    assert status is not None
    return status, messages


async def send(s: rpc_grpc.MessagingServiceStub, topic: str, *bodies: bytes) -> None:
    sent = await s.SendMessage(rpc.SendMessageRequest(messages=[message(topic, b) for b in bodies]), metadata=CLIENT)
    assert sent.status.code == pb.OK, sent.status


async def ack(s: rpc_grpc.MessagingServiceStub, topic: str, group: str, handle: str) -> rpc.AckMessageResponse:
    request = rpc.AckMessageRequest(
        group=pb.Resource(name=group),
        topic=pb.Resource(name=topic),
        entries=[rpc.AckMessageEntry(message_id="m", receipt_handle=handle)],
    )
    return await s.AckMessage(request, metadata=CLIENT)


async def test_bad_receives_are_answered_with_the_protocols_codes(cluster: LocalCluster) -> None:
    await create_topic(cluster, "PopBad", queues=2)
    async with stub(cluster) as s:
        missing, _ = await receive(s, "NoSuchPopTopic", "g")
        assert missing.code == pb.TOPIC_NOT_FOUND, missing
        short, _ = await receive(s, "PopBad", "g", invisible_duration=seconds(1))
        assert short.code == pb.ILLEGAL_INVISIBLE_TIME and "10 s" in short.message
        sql, _ = await receive(s, "PopBad", "g", filter_expression=pb.FilterExpression(type=pb.SQL, expression="a>1"))
        assert sql.code == pb.ILLEGAL_FILTER_EXPRESSION
        request = receive_request("PopBad", "g", long_polling_timeout=seconds(1))  # no invisible time, no renewal
        answers = [r async for r in s.ReceiveMessage(request, metadata=CLIENT, timeout=10)]
        assert answers[0].status.code == pb.ILLEGAL_INVISIBLE_TIME
        for forged in ("", "garbage", "k1 1 1 other-broker 0 0 PopBad", "k1 x 1 broker-a 0 0 PopBad"):
            answer = await ack(s, "PopBad", "g", forged)
            assert answer.entries[0].status.code == pb.INVALID_RECEIPT_HANDLE, (forged, answer)
        changed = await s.ChangeInvisibleDuration(
            rpc.ChangeInvisibleDurationRequest(
                group=pb.Resource(name="g"), topic=pb.Resource(name="PopBad"), receipt_handle="nonsense",
                invisible_duration=seconds(5),
            ),
            metadata=CLIENT,
        )  # fmt: skip
        assert changed.status.code == pb.INVALID_RECEIPT_HANDLE


async def test_long_polling_ends_before_the_deadline_and_wakes_on_a_send(cluster: LocalCluster) -> None:
    await create_topic(cluster, "PopPoll", queues=4)
    async with stub(cluster) as s:
        began = time.monotonic()
        empty, got = await receive(s, "PopPoll", "poller", long_polling_timeout=seconds(1.5))
        waited = time.monotonic() - began
        assert empty.code == pb.MESSAGE_NOT_FOUND and got == [] and 1.3 <= waited < 5, waited

        async def late_send() -> float:
            await asyncio.sleep(0.5)
            await send(s, "PopPoll", b"late")
            return time.monotonic()

        sender = asyncio.ensure_future(late_send())
        found, got = await receive(s, "PopPoll", "poller", long_polling_timeout=seconds(15))
        delay = time.monotonic() - await sender
        assert found.code == pb.OK and [m.body for m in got] == [b"late"]
        assert delay < 2.0, delay  # woken by the send, not by the poll's end


async def test_zero_invisible_time_redelivers_and_forward_moves_to_the_dlq(cluster: LocalCluster) -> None:
    topic, group = "PopForward", "pop-forward"
    await create_topic(cluster, topic, queues=2)
    async with stub(cluster) as s:
        await send(s, topic, b"again", b"dead")
        status, got = await receive(s, topic, group)
        assert status.code == pb.OK and sorted(m.body for m in got) == [b"again", b"dead"]
        by_body = {m.body: m for m in got}
        assert all(m.system_properties.delivery_attempt == 1 for m in got)
        assert all(m.system_properties.body_digest.type == pb.MD5 for m in got)
        changed = await s.ChangeInvisibleDuration(
            rpc.ChangeInvisibleDurationRequest(
                group=pb.Resource(name=group), topic=pb.Resource(name=topic),
                receipt_handle=by_body[b"again"].system_properties.receipt_handle, invisible_duration=seconds(0),
            ),
            metadata=CLIENT,
        )  # fmt: skip
        assert changed.status.code == pb.OK and changed.receipt_handle
        forwarded = await s.ForwardMessageToDeadLetterQueue(
            rpc.ForwardMessageToDeadLetterQueueRequest(
                group=pb.Resource(name=group), topic=pb.Resource(name=topic),
                receipt_handle=by_body[b"dead"].system_properties.receipt_handle,
                message_id=by_body[b"dead"].system_properties.message_id, delivery_attempt=1, max_delivery_attempts=17,
            ),
            metadata=CLIENT,
        )  # fmt: skip
        assert forwarded.status.code == pb.OK, forwarded.status
        stale = await ack(s, topic, group, by_body[b"dead"].system_properties.receipt_handle)
        assert stale.entries[0].status.code == pb.INVALID_RECEIPT_HANDLE  # settled by the forward
        status, again = await receive(s, topic, group, long_polling_timeout=seconds(5))
        assert status.code == pb.OK and [m.body for m in again] == [b"again"], again
        redelivered = again[0].system_properties
        assert (
            redelivered.delivery_attempt == 2
            and redelivered.message_id == by_body[b"again"].system_properties.message_id
        )
        assert again[0].topic.name == topic  # the retry copy names the topic the client subscribed to
        assert (await ack(s, topic, group, redelivered.receipt_handle)).entries[0].status.code == pb.OK
    dead = await asyncio.to_thread(lambda: asyncio.run(read_all(cluster.namesrv_addr, f"%DLQ%{group}")))
    assert [m.body for m in dead] == [b"dead"]


@pytest.mark.parametrize("fifo", [False, True])
async def test_assignments_are_per_broker_or_per_queue_for_fifo_groups(cluster: LocalCluster, fifo: bool) -> None:
    topic, group = f"PopAssign{int(fifo)}", f"pop-assign-{int(fifo)}"
    await create_topic(cluster, topic, queues=3)
    async with Admin(cluster.namesrv_addr) as admin:
        await admin.create_group(SubscriptionGroupConfig(group, consume_message_orderly=fifo))
    async with stub(cluster) as s:
        answer = await s.QueryAssignment(
            rpc.QueryAssignmentRequest(topic=pb.Resource(name=topic), group=pb.Resource(name=group)), metadata=CLIENT
        )
    assert answer.status.code == pb.OK, answer.status
    queues = sorted((a.message_queue.broker.name, a.message_queue.id) for a in answer.assignments)
    brokers = sorted({b.name.rsplit("-", 1)[0] for b in cluster.brokers})
    if fifo:
        assert queues == [(b, q) for b in brokers for q in range(3)]
    else:
        assert queues == [(b, -1) for b in brokers]
