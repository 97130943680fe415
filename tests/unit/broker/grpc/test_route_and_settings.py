"""QueryRoute's queues from a name-server route, and the Telemetry settings reply the SDKs depend on."""

from __future__ import annotations

from krocket.broker.grpc.endpoints import endpoints, split_host_port
from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.grpc.route import message_queues
from krocket.broker.grpc.settings import reply_settings
from krocket.broker.schedule import DEFAULT_DELAY_LEVELS, DelayLevels
from krocket.common.route import BrokerData, QueueData, TopicRouteData
from krocket.common.subscription_group import SubscriptionGroupConfig

TOPIC = pb.Resource(name="T")


def route(*groups: tuple[str, int, int, int, str | None]) -> TopicRouteData:
    queue_datas, broker_datas = [], []
    for name, read, write, perm, grpc_addr in groups:
        queue_datas.append(QueueData(name, read, write, perm))
        data = BrokerData("c", name, {0: f"10.0.0.1:{10911}", 1: "10.0.0.2:10911"})
        if grpc_addr:
            data.grpc_addrs = {0: grpc_addr, 1: "10.0.0.2:8081"}
        broker_datas.append(data)
    return TopicRouteData(queue_datas, broker_datas)


def test_every_queue_of_every_master_that_serves_grpc_with_its_permission() -> None:
    queues = message_queues(TOPIC, route(("b", 2, 2, 6, "10.0.0.3:8081"), ("a", 4, 2, 6, "10.0.0.1:8081")), [pb.NORMAL])
    assert [(q.broker.name, q.id, q.permission) for q in queues] == [
        ("a", 0, pb.READ_WRITE),
        ("a", 1, pb.READ_WRITE),
        ("a", 2, pb.READ),
        ("a", 3, pb.READ),
        ("b", 0, pb.READ_WRITE),
        ("b", 1, pb.READ_WRITE),
    ]
    assert {q.broker.id for q in queues} == {0}  # masters only: slaves take no sends
    a0 = queues[0]
    assert [(x.host, x.port) for x in a0.broker.endpoints.addresses] == [("10.0.0.1", 8081)]
    assert a0.broker.endpoints.scheme == pb.IPv4 and list(a0.accept_message_types) == [pb.NORMAL]


def test_brokers_without_grpc_and_read_only_topics() -> None:
    queues = message_queues(TOPIC, route(("a", 2, 2, 4, "h:1"), ("b", 2, 2, 6, None)), [pb.FIFO])
    assert [(q.broker.name, q.permission) for q in queues] == [("a", pb.READ), ("a", pb.READ)]
    assert queues[0].broker.endpoints.scheme == pb.DOMAIN_NAME


def test_endpoints_of_ipv6_and_names() -> None:
    assert split_host_port("[::1]:8081") == ("::1", 8081)
    assert endpoints("[::1]:8081").scheme == pb.IPv6
    assert endpoints("broker-a-0.broker-a:8081").scheme == pb.DOMAIN_NAME


def test_a_producer_is_told_the_body_limit_type_check_and_an_exponential_backoff() -> None:
    client = pb.Settings(client_type=pb.PRODUCER, publishing=pb.Publishing(topics=[TOPIC]))
    reply = reply_settings(client, 4 * 1024 * 1024, None, DelayLevels.parse(DEFAULT_DELAY_LEVELS))
    assert reply.publishing.max_body_size == 4 * 1024 * 1024
    assert reply.publishing.validate_message_type
    assert [t.name for t in reply.publishing.topics] == ["T"]
    assert reply.backoff_policy.max_attempts == 3 and reply.backoff_policy.HasField("exponential_backoff")
    assert reply.backoff_policy.exponential_backoff.multiplier == 2.0
    assert not reply.metric.on


def test_a_consumer_is_told_its_group_settings() -> None:
    client = pb.Settings(client_type=pb.PUSH_CONSUMER, subscription=pb.Subscription(group=pb.Resource(name="g")))
    group = SubscriptionGroupConfig("g", consume_message_orderly=True, retry_max_times=4)
    reply = reply_settings(client, 1024, group, DelayLevels.parse(DEFAULT_DELAY_LEVELS))
    sub = reply.subscription
    assert sub.fifo and sub.receive_batch_size == 32 and sub.long_polling_timeout.seconds == 20
    assert reply.backoff_policy.max_attempts == 5
    delays = [d.ToMilliseconds() for d in reply.backoff_policy.customized_backoff.next]
    assert delays[:3] == [10_000, 30_000, 60_000] and delays[-1] == 7_200_000
    plain = reply_settings(client, 1024, None, DelayLevels.parse(DEFAULT_DELAY_LEVELS))
    assert not plain.subscription.fifo and plain.backoff_policy.max_attempts == 17
