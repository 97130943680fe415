#!/usr/bin/env bash
# Regenerates the broker's gRPC stubs (krocket.broker.grpc.protocol) from the RocketMQ 5.x protos vendored
# under broker/krocket/broker/grpc/protocol/proto (apache/rocketmq-apis, Apache-2.0; see the README there).
# Needs grpcio-tools from the dev extras: the pinned version decides the grpcio/protobuf floor the stubs check
# (grpcio-tools 1.85.1: grpcio >= 1.85.1, protobuf >= 7.35.1, as pyproject.toml pins them).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${KROCKET_VENV:-.venv}"
OUT=broker/krocket/broker/grpc/protocol
PROTO="$OUT/proto"
"$VENV/bin/python" -m grpc_tools.protoc -I "$PROTO" --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  "$PROTO/apache/rocketmq/v2/definition.proto" "$PROTO/apache/rocketmq/v2/service.proto"
# protoc writes them under apache/rocketmq/v2/ with absolute imports of `apache.rocketmq.v2`; krocket keeps them
# flat in its own package, so the imports are made package-relative.
for f in definition_pb2.py definition_pb2.pyi service_pb2.py service_pb2.pyi service_pb2_grpc.py; do
  sed -e 's/^from apache\.rocketmq\.v2 import /from . import /' "$OUT/apache/rocketmq/v2/$f" > "$OUT/$f"
done
rm -rf "$OUT/apache"
echo "generated: $(cd "$OUT" && ls ./*_pb2*.py* | tr '\n' ' ')"
