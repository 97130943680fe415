"""The broker's 5.x gRPC service driven with krocket's own stubs (a raw client: what the SDKs may not send is
tried too): headers, routes, the settings exchange, sends with their checks, transactions with check-back over
Telemetry, and what is not served."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.grpc.protocol import service_pb2 as rpc
from krocket.broker.grpc.protocol import service_pb2_grpc as rpc_grpc
from krocket.client import Admin
from krocket.common.message_type import MESSAGE_TYPE_ATTRIBUTE

from tests.conformance.test_rocketmq_cpp_client import read_all
from tests.support.cluster import LocalCluster, create_topic, wait_until_async
from tests.support.rmq5 import start_grpc_cluster

CLIENT = (("x-mq-client-id", "it@1@1@test"), ("x-mq-language", "PYTHON"), ("x-mq-client-version", "5.1.2"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = start_grpc_cluster(tmp_path_factory.mktemp("grpc"))
    try:
        yield c
    finally:
        c.stop()


@contextlib.asynccontextmanager
async def stub(cluster: LocalCluster, index: int = 0) -> AsyncIterator[rpc_grpc.MessagingServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster.brokers[index].grpc_port}") as channel:
        yield rpc_grpc.MessagingServiceStub(channel)


def message(topic: str, body: bytes = b"b", **system: object) -> pb.Message:
    msg = pb.Message(topic=pb.Resource(name=topic), body=body)
    msg.system_properties.message_id = uuid.uuid4().hex.upper()
    for key, value in system.items():
        setattr(msg.system_properties, key, value)
    return msg


async def set_message_type(cluster: LocalCluster, topic: str, message_type: str) -> None:
    async with Admin(cluster.namesrv_addr) as admin:
        await admin.update_topic(topic, attributes={MESSAGE_TYPE_ATTRIBUTE: message_type})


async def test_headers_routes_and_unserved_calls(cluster: LocalCluster) -> None:
    await create_topic(cluster, "GrpcRoute", queues=2)
    async with stub(cluster) as s:
        anonymous = await s.QueryRoute(rpc.QueryRouteRequest(topic=pb.Resource(name="GrpcRoute")))
        assert anonymous.status.code == pb.CLIENT_ID_REQUIRED
        missing = await s.QueryRoute(rpc.QueryRouteRequest(topic=pb.Resource(name="NoSuch")), metadata=CLIENT)
        assert missing.status.code == pb.TOPIC_NOT_FOUND, missing.status
        system = await s.QueryRoute(rpc.QueryRouteRequest(topic=pb.Resource(name="%DLQ%g")), metadata=CLIENT)
        assert system.status.code == pb.ILLEGAL_TOPIC
        route = await s.QueryRoute(rpc.QueryRouteRequest(topic=pb.Resource(name="GrpcRoute")), metadata=CLIENT)
        assert route.status.code == pb.OK, route.status
        brokers = {(q.broker.name, q.broker.endpoints.addresses[0].port) for q in route.message_queues}
        assert brokers == {(b.name.rsplit("-", 1)[0], b.grpc_port) for b in cluster.brokers}  # each master's own
        assert len(route.message_queues) == 2 * len(cluster.brokers)
        assert {tuple(q.accept_message_types) for q in route.message_queues} == {(pb.NORMAL,)}
        with pytest.raises(grpc.aio.AioRpcError) as unserved:
            await s.PullMessage(rpc.PullMessageRequest(), metadata=CLIENT).read()
        assert unserved.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_settings_are_answered_on_the_telemetry_stream(cluster: LocalCluster) -> None:
    async with stub(cluster) as s:
        call = s.Telemetry(metadata=CLIENT)
        settings = pb.Settings(client_type=pb.PRODUCER, publishing=pb.Publishing(topics=[pb.Resource(name="T")]))
        await call.write(rpc.TelemetryCommand(settings=settings))
        reply = await asyncio.wait_for(call.read(), 10)
        assert reply.status.code == pb.OK
        assert reply.settings.publishing.max_body_size == 4 * 1024 * 1024
        assert reply.settings.backoff_policy.HasField("exponential_backoff")
        await call.done_writing()
        assert await asyncio.wait_for(call.read(), 10) == grpc.aio.EOF
        heartbeat = await s.Heartbeat(rpc.HeartbeatRequest(client_type=pb.PRODUCER), metadata=CLIENT)
        assert heartbeat.status.code == pb.OK
        bye = await s.NotifyClientTermination(rpc.NotifyClientTerminationRequest(), metadata=CLIENT)
        assert bye.status.code == pb.OK


async def test_sends_are_checked_typed_and_stored_for_4x_readers(cluster: LocalCluster) -> None:
    await create_topic(cluster, "GrpcSend", queues=2)
    async with stub(cluster) as s:
        good = message("GrpcSend", b"hello", tag="A")
        sent = await s.SendMessage(rpc.SendMessageRequest(messages=[good]), metadata=CLIENT)
        assert sent.status.code == pb.OK and sent.entries[0].message_id == good.system_properties.message_id
        refused = {
            "empty body": (message("GrpcSend", b""), pb.MESSAGE_BODY_EMPTY),
            "bad tag": (message("GrpcSend", tag="a|b"), pb.ILLEGAL_MESSAGE_TAG),
            "wrong type": (
                message("GrpcSend", message_group="g", message_type=pb.FIFO),
                pb.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE,
            ),
            "missing topic": (message("NoSuchTopic"), pb.TOPIC_NOT_FOUND),
        }
        for what, (msg, code) in refused.items():
            answer = await s.SendMessage(rpc.SendMessageRequest(messages=[msg]), metadata=CLIENT)
            assert answer.status.code == code, (what, answer.status)
        mixed = await s.SendMessage(
            rpc.SendMessageRequest(messages=[message("GrpcSend", b"x"), message("GrpcSend", b"")]), metadata=CLIENT
        )
        assert mixed.status.code == pb.MULTIPLE_RESULTS
        assert [e.status.code for e in mixed.entries] == [pb.OK, pb.MESSAGE_BODY_EMPTY]
    got = await read_all(cluster.namesrv_addr, "GrpcSend")
    assert sorted(m.body for m in got) == [b"hello", b"x"]
    hello = next(m for m in got if m.body == b"hello")
    assert hello.msg_id == good.system_properties.message_id and hello.tags == "A"


async def test_the_cli_sets_a_topic_type_that_5x_sends_are_checked_against(cluster: LocalCluster) -> None:
    def krocket(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "krocket.cli.main", *args, "--namesrv", cluster.namesrv_addr]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    created = await asyncio.to_thread(krocket, "topic", "create", "GrpcFifo", "-r", "2", "--message-type", "FIFO")
    assert created.returncode == 0, created.stderr
    wrong = await asyncio.to_thread(krocket, "topic", "update", "GrpcFifo", "--message-type", "QUEUE")
    assert wrong.returncode == 2 and "invalid choice: 'QUEUE'" in wrong.stderr
    async with Admin(cluster.namesrv_addr) as admin:
        configs = [await admin.topic_config(b.addr) for b in cluster.brokers]
    assert [c["GrpcFifo"]["attributes"] for c in configs] == [{MESSAGE_TYPE_ATTRIBUTE: "FIFO"}] * 2
    async with stub(cluster) as s:
        normal = await s.SendMessage(rpc.SendMessageRequest(messages=[message("GrpcFifo")]), metadata=CLIENT)
        assert normal.status.code == pb.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, normal.status
        assert "FIFO" in normal.status.message, "the refusal names the topic's type"
        fifo = message("GrpcFifo", message_group="g1", message_type=pb.FIFO)
        sent = await s.SendMessage(rpc.SendMessageRequest(messages=[fifo]), metadata=CLIENT)
        assert sent.status.code == pb.OK, sent.status
    kept = await asyncio.to_thread(krocket, "topic", "update", "GrpcFifo", "-r", "4")
    assert kept.returncode == 0, kept.stderr
    async with Admin(cluster.namesrv_addr) as admin:
        config = (await admin.topic_config(cluster.brokers[0].addr))["GrpcFifo"]
    assert (config["readQueueNums"], config["attributes"]) == (4, {MESSAGE_TYPE_ATTRIBUTE: "FIFO"}), "kept"


async def test_transactions_commit_roll_back_and_are_checked_back_over_telemetry(cluster: LocalCluster) -> None:
    topic = "GrpcTx"
    await create_topic(cluster, topic, queues=1, brokers=["broker-a"])
    await set_message_type(cluster, topic, "TRANSACTION")
    async with stub(cluster) as s:
        ids = {}
        for name in ("commit", "rollback", "orphan"):
            msg = message(topic, name.encode(), message_type=pb.TRANSACTION)
            answer = await s.SendMessage(rpc.SendMessageRequest(messages=[msg]), metadata=CLIENT)
            assert answer.status.code == pb.OK, answer.status
            ids[name] = answer.entries[0].transaction_id
            assert ids[name] == msg.system_properties.message_id
        assert await read_all(cluster.namesrv_addr, topic) == []  # half messages are not visible
        for name, resolution in (("commit", pb.COMMIT), ("rollback", pb.ROLLBACK)):
            end = rpc.EndTransactionRequest(
                topic=pb.Resource(name=topic), message_id=ids[name], transaction_id=ids[name], resolution=resolution
            )
            assert (await s.EndTransaction(end, metadata=CLIENT)).status.code == pb.OK
        blank = rpc.EndTransactionRequest(topic=pb.Resource(name=topic), transaction_id=" ", resolution=pb.COMMIT)
        assert (await s.EndTransaction(blank, metadata=CLIENT)).status.code == pb.INVALID_TRANSACTION_ID
        unknown = rpc.EndTransactionRequest(
            topic=pb.Resource(name=topic), transaction_id="FF" * 17, resolution=pb.COMMIT
        )
        assert (await s.EndTransaction(unknown, metadata=CLIENT)).status.code == pb.INVALID_TRANSACTION_ID

        # The orphan: a producer of the topic holds a Telemetry stream and is asked for its outcome.
        call = s.Telemetry(metadata=CLIENT)
        settings = pb.Settings(client_type=pb.PRODUCER, publishing=pb.Publishing(topics=[pb.Resource(name=topic)]))
        await call.write(rpc.TelemetryCommand(settings=settings))
        assert (await asyncio.wait_for(call.read(), 10)).status.code == pb.OK
        check = await asyncio.wait_for(call.read(), 30)  # transactionTimeOut and the check interval (test cluster)
        recover = check.recover_orphaned_transaction_command
        assert recover.transaction_id == ids["orphan"] and recover.message.body == b"orphan"
        assert recover.message.topic.name == topic
        answer = rpc.EndTransactionRequest(
            topic=pb.Resource(name=topic),
            message_id=ids["orphan"],
            transaction_id=recover.transaction_id,
            resolution=pb.COMMIT,
            source=pb.SOURCE_SERVER_CHECK,
        )
        assert (await s.EndTransaction(answer, metadata=CLIENT)).status.code == pb.OK
        await call.done_writing()

    async def delivered() -> bool:
        return sorted(m.body for m in await read_all(cluster.namesrv_addr, topic)) == [b"commit", b"orphan"]

    await wait_until_async(delivered, timeout=20, message="the committed and the checked-back messages")
