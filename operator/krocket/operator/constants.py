"""Names shared by the CRDs, the builders and the handlers: API group, labels, annotations.

Ports are RocketMQ facts and come from `krocket.common.ports`.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "krocket.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

NAMESERVERSETS: Final = "nameserversets"
BROKERGROUPS: Final = "brokergroups"
TOPICS: Final = "topics"
USERS: Final = "users"
CONSUMERGROUPS: Final = "consumergroups"

KIND_NAMESERVERSET: Final = "NameServerSet"
KIND_BROKERGROUP: Final = "BrokerGroup"
KIND_TOPIC: Final = "Topic"
KIND_USER: Final = "User"
KIND_CONSUMERGROUP: Final = "ConsumerGroup"

DEFAULT_IMAGE: Final = "krocket/broker:0.1.0"
DEFAULT_NAMESRV_IMAGE: Final = "krocket/namesrv:0.1.0"
DATA_DIR: Final = "/var/lib/krocket"
CONFIG_DIR: Final = "/etc/krocket"
CONFIG_FILE: Final = "broker.yaml"

# Labels put on every child object.
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_CLUSTER: Final = "krocket.io/cluster"
LABEL_POD_INDEX: Final = "apps.kubernetes.io/pod-index"
MANAGED_BY: Final = "krocket-operator"
COMPONENT_NAMESRV: Final = "namesrv"
COMPONENT_BROKER: Final = "broker"

# Annotations users set to allow something that could lose data.
ANN_ALLOW_QUEUE_SHRINK: Final = "krocket.io/allow-queue-shrink"
ANN_SKIP_DRAIN_CHECK: Final = "krocket.io/skip-drain-check"
ANN_DRAIN: Final = "krocket.io/drain"  # "true": withdraw writes, wait for consumers (BrokerGroup, Topic)
ANN_DRAIN_DEADLINE: Final = "krocket.io/drain-deadline"  # e.g. "30m": how long a drain may wait
ANN_CONFIG_HASH: Final = "krocket.io/config-hash"
ANN_TEMPLATE_HASH: Final = "krocket.io/template-hash"
# On a NameServerSet: the other namespaces whose BrokerGroups may register with it ("team-a,team-b" or "*").
ANN_ALLOWED_NAMESPACES: Final = "krocket.io/allowed-namespaces"

# Roll controls a user sets on a BrokerGroup (rollout.py); the operator removes the one-shot ones when done.
ANN_FORCE_ROLL: Final = "krocket.io/force-roll"
ANN_MASTER_ROLL_DEADLINE: Final = "krocket.io/master-roll-deadline"
ANN_PAUSED: Final = "krocket.io/paused"
ANN_MANUAL_ROLLING_UPDATE: Final = "krocket.io/manual-rolling-update"
ANN_MANUAL_ROLL: Final = "krocket.io/manual-roll"  # pod template annotation (a counter) a manual roll bumps

FINALIZER: Final = "krocket.io/finalizer"
ANNOTATION_PREFIX: Final = "operator.krocket.io"
