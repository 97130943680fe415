"""Pop consumption (RocketMQ 5's POP, what 5.x SimpleConsumers and PushConsumers use over gRPC): the broker hands
out messages with an invisible time, settles them on ack, and redelivers what is not acked in time.

``handle``: the receipt handle a delivery is acked by. ``records``: the pop log's records (checkpoints, acks,
rewinds) in the commit log topic ``KROCKET_SYS_POP_LOG``, which makes pop state durable and replicated.
``leases``: the in-memory state those records build (pure). ``service``: pops, acks, invisible-time changes,
redelivery through ``%RETRY%{group}_{topic}`` and the dead-letter queue, replay at start."""
