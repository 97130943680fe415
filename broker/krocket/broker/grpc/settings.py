"""The Telemetry settings reply: what the broker tells each 5.x client, as RocketMQ's proxy does
(``GrpcClientSettingsManager``). The SDKs overwrite their own settings with it, so it must be complete: a producer
without ``publishing.max_body_size`` refuses every send, the Node producer asserts an exponential backoff, push
consumers take their long-poll, batch size, FIFO mode and retry delays from it."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration

from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.schedule import DelayLevels
from krocket.common.subscription_group import SubscriptionGroupConfig

PRODUCER_MAX_ATTEMPTS = 3
"""A producer's attempts per send (RocketMQ's proxy: 3, exponential 10 ms .. 1 s, multiplier 2)."""
PRODUCER_BACKOFF_INITIAL_MS, PRODUCER_BACKOFF_MAX_MS, PRODUCER_BACKOFF_MULTIPLIER = 10, 1000, 2.0
RECEIVE_BATCH_SIZE = 32
"""Messages per receive for push consumers (the proxy's cap on a pop, too)."""
LONG_POLLING_TIMEOUT_S = 20
"""A push consumer's receive long-poll (the proxy's default)."""
FIRST_RETRY_LEVEL = 3
"""A consumer's retry delays are the delay levels from level 3 on (10 s, 30 s, 1 m, ..., 2 h), as 4.x retries."""
CONSUMER_TYPES = (
    pb.PUSH_CONSUMER,
    pb.SIMPLE_CONSUMER,
    pb.PULL_CONSUMER,
    pb.LITE_PUSH_CONSUMER,
    pb.LITE_SIMPLE_CONSUMER,
)


def millis(ms: int) -> Duration:
    value = Duration()
    value.FromMilliseconds(ms)
    return value


def producer_backoff() -> pb.RetryPolicy:
    return pb.RetryPolicy(
        max_attempts=PRODUCER_MAX_ATTEMPTS,
        exponential_backoff=pb.ExponentialBackoff(
            initial=millis(PRODUCER_BACKOFF_INITIAL_MS),
            max=millis(PRODUCER_BACKOFF_MAX_MS),
            multiplier=PRODUCER_BACKOFF_MULTIPLIER,
        ),
    )


def consumer_backoff(group: SubscriptionGroupConfig, levels: DelayLevels) -> pb.RetryPolicy:
    """max attempts = retryMaxTimes + 1 (the first delivery and its retries); the delay before retry n is delay
    level n + 2, the last level repeating (what the Python push consumer reads: a customized backoff)."""
    delays = [millis(levels.delay_ms(level)) for level in range(FIRST_RETRY_LEVEL, levels.max_level + 1)]
    return pb.RetryPolicy(
        max_attempts=group.retry_max_times + 1,
        customized_backoff=pb.CustomizedBackoff(next=delays or [millis(1000)]),
    )


def reply_settings(
    client: pb.Settings, max_body_size: int, group: SubscriptionGroupConfig | None, levels: DelayLevels
) -> pb.Settings:
    """The settings the broker answers ``client``'s with: the client's own, completed and overruled."""
    reply = pb.Settings()
    reply.CopyFrom(client)
    reply.metric.CopyFrom(pb.Metric(on=False))
    if client.HasField("publishing") or client.client_type == pb.PRODUCER:
        reply.backoff_policy.CopyFrom(producer_backoff())
        reply.publishing.max_body_size = max_body_size
        reply.publishing.validate_message_type = True
    elif client.client_type in CONSUMER_TYPES or client.HasField("subscription"):
        effective = group or SubscriptionGroupConfig(client.subscription.group.name or "unknown")
        reply.backoff_policy.CopyFrom(consumer_backoff(effective, levels))
        reply.subscription.fifo = effective.consume_message_orderly
        reply.subscription.receive_batch_size = RECEIVE_BATCH_SIZE
        reply.subscription.long_polling_timeout.CopyFrom(millis(LONG_POLLING_TIMEOUT_S * 1000))
    return reply
