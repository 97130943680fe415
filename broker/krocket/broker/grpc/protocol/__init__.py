"""Generated RocketMQ 5.x gRPC stubs (``apache.rocketmq.v2``): ``definition_pb2`` (messages, enums, ``Code``),
``service_pb2`` (requests and responses) and ``service_pb2_grpc`` (``MessagingService``). Do not edit: run
``scripts/gen-grpc.sh`` after changing the vendored protos in ``proto/``."""
