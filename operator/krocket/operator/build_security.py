"""NetworkPolicy of a BrokerGroup or a NameServerSet (pure).

One NetworkPolicy per BrokerGroup and one per NameServerSet, owned by it (garbage-collected with it), selecting
exactly that resource's pods. Per owner rather than per clusterName: the HA rule ("only between a group's own
pods") is a per-group fact, a per-cluster object would have no single owner to be collected with, and groups of
one cluster may differ in their opt-out or monitoring namespace.

- remoting (brokers 10911, name servers 9876) and a broker's gRPC port (8081, `spec.grpc`; RocketMQ 5.x SDKs):
  open to every client (RocketMQ clients connect from anywhere);
- HA (10912): only from the pods of the same BrokerGroup (slaves replicate from their master);
- HTTP admin (broker 10913, name server 9877): only from the operator's pods (its namespace and pod labels) and
  from a monitoring namespace (Prometheus scrapes /metrics there).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from krocket.common import ports
from krocket.operator import build_grpc
from krocket.operator import constants as c
from krocket.operator.build_common import Manifest, child_metadata, common_labels, meta, selector_labels, spec_of

SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
DEFAULT_OPERATOR_POD_LABELS: Mapping[str, str] = {c.LABEL_NAME: "krocket", c.LABEL_COMPONENT: "operator"}
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class NetworkPolicySettings:
    """Where the operator runs and which namespace monitors, as the operator is configured.

    `operator_namespace` empty: the operator's pods are matched by their labels in any namespace (weaker; the
    operator normally knows its namespace from POD_NAMESPACE or its service account).
    `monitoring_namespace_labels` empty: no monitoring namespace unless the resource names one.
    """

    operator_namespace: str = ""
    operator_pod_labels: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_OPERATOR_POD_LABELS))
    monitoring_namespace_labels: Mapping[str, str] = field(default_factory=dict)


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` -> {k: v, k2: v2}; ValueError names a pair without `=`."""
    out: dict[str, str] = {}
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{pair!r} is not a label pair key=value")
        out[key.strip()] = value.strip()
    return out


def settings_from_env(env: Mapping[str, str], sa_namespace: str | None = None) -> NetworkPolicySettings:
    """KROCKET_OPERATOR_NAMESPACE (else POD_NAMESPACE, else the service account's namespace),
    KROCKET_OPERATOR_POD_LABELS and KROCKET_MONITORING_NAMESPACE_LABELS (`k=v,k2=v2`)."""
    namespace = env.get("KROCKET_OPERATOR_NAMESPACE") or env.get("POD_NAMESPACE") or (sa_namespace or "")
    labels = parse_labels(env.get("KROCKET_OPERATOR_POD_LABELS", "")) or dict(DEFAULT_OPERATOR_POD_LABELS)
    return NetworkPolicySettings(
        operator_namespace=namespace.strip(),
        operator_pod_labels=labels,
        monitoring_namespace_labels=parse_labels(env.get("KROCKET_MONITORING_NAMESPACE_LABELS", "")),
    )


def network_policy_name(name: str) -> str:
    return f"{name}-network"


def enabled(body: Mapping[str, Any]) -> bool:
    return bool((spec_of(body).get("networkPolicy") or {}).get("enabled", True))


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def _admin_peers(body: Mapping[str, Any], settings: NetworkPolicySettings) -> list[dict[str, Any]]:
    operator_peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(settings.operator_pod_labels)}}
    if settings.operator_namespace:
        operator_peer["namespaceSelector"] = {"matchLabels": {NAMESPACE_NAME_LABEL: settings.operator_namespace}}
    else:
        operator_peer["namespaceSelector"] = {}
    peers = [operator_peer]
    own = (spec_of(body).get("networkPolicy") or {}).get("monitoringNamespaceSelector")
    if own:
        peers.append({"namespaceSelector": dict(own)})
    elif settings.monitoring_namespace_labels:
        peers.append({"namespaceSelector": {"matchLabels": dict(settings.monitoring_namespace_labels)}})
    return peers


def network_policy(
    body: Mapping[str, Any], component: str, settings: NetworkPolicySettings, cluster: str | None = None
) -> Manifest:
    """The NetworkPolicy of `body` (a BrokerGroup when component is broker, else a NameServerSet)."""
    name = meta(body)["name"]
    own_pods = {"matchLabels": selector_labels(name, component)}
    ingress: list[dict[str, Any]]
    if component == c.COMPONENT_BROKER:
        grpc = build_grpc.port(body)
        client_ports = [ports.BROKER_PORT] if grpc is None else [ports.BROKER_PORT, grpc]
        ingress = [
            {"ports": [_tcp(p) for p in client_ports]},
            {"from": [{"podSelector": own_pods}], "ports": [_tcp(ports.BROKER_HA_PORT)]},
            {"from": _admin_peers(body, settings), "ports": [_tcp(ports.BROKER_HTTP_PORT)]},
        ]
    else:
        ingress = [
            {"ports": [_tcp(ports.NAMESRV_PORT)]},
            {"from": _admin_peers(body, settings), "ports": [_tcp(ports.NAMESRV_HTTP_PORT)]},
        ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(body, network_policy_name(name), common_labels(name, component, cluster)),
        "spec": {"podSelector": own_pods, "policyTypes": ["Ingress"], "ingress": ingress},
    }
