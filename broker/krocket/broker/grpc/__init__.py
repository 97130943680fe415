"""RocketMQ 5.x clients, natively: ``apache.rocketmq.v2.MessagingService`` served by the broker itself over gRPC
(``grpcListenPort``, default 8081), beside remoting, on the same store, topics and groups; no proxy.

One concept per module: ``status`` (the protocol's ``Status`` and how krocket's errors map to it), ``metadata``
(the ``x-mq-*`` headers of a call), ``endpoints`` (``host:port`` as the protocol's ``Endpoints``), ``route``
(QueryRoute's message queues from name-server routes), ``settings`` (the Telemetry settings reply), ``clients``
(what the broker keeps per client id), ``send`` (a 5.x message checked and mapped onto a 4.x message),
``service`` (the thin RPC handlers) and ``server`` (grpc.aio in the broker's event loop). The generated stubs are
``protocol`` (``scripts/gen-grpc.sh``)."""
