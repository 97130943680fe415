"""BrokerGroup -> ConfigMap, headless Service, StatefulSet (master = ordinal 0), PodDisruptionBudget (pure).

Also the pure decisions the reconciler takes for a group: the rolling-update partition, slave scale-down
and storage changes. Nothing here talks to the API server or to a broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from krocket.common import ports
from krocket.operator import build_acl, build_grpc, build_namesrv, build_tls
from krocket.operator import constants as c
from krocket.operator.build_common import (
    Manifest,
    apply_pod_template,
    child_metadata,
    common_labels,
    container_resources,
    meta,
    pdb,
    restricted_security_context,
    selector_labels,
    spec_of,
    stable_hash,
)
from krocket.operator.quantity import parse_quantity

COMPONENT = c.COMPONENT_BROKER
DATA_VOLUME = "data"
DEFAULT_STORAGE_SIZE = "10Gi"

# Keys the operator owns in broker.yaml; `brokerConfig.extra` may not set them (the CRD refuses them too).
RESERVED_CONFIG_KEYS = frozenset(
    {
        "brokerClusterName",
        "brokerName",
        "brokerId",
        "brokerRole",
        "flushDiskType",
        "namesrvAddr",
        "listenPort",
        "haListenPort",
        "httpPort",
        "grpcListenPort",
        "storePathRootDir",
    }
)


class SpecError(ValueError):
    """A spec the operator refuses; `reason` is the condition reason shown to the user."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- names ------------------------------------------------------------------------------------------


def statefulset_name(name: str) -> str:
    return name


def headless_service_name(name: str) -> str:
    return f"{name}-headless"


def configmap_name(name: str) -> str:
    """The un-versioned name older operator versions used; removed once a roll onto a revisioned one is done."""
    return f"{name}-config"


CONFIG_REVISION_HASH_LENGTH = 10


def config_revision_name(name: str, data: Mapping[str, str]) -> str:
    """`<name>-config-<hash of the data>`: one ConfigMap per config revision, so a pod reads the config of its
    own template revision (an unrolled pod that restarts keeps its old config until it is rolled)."""
    return f"{configmap_name(name)}-{stable_hash(dict(data))[:CONFIG_REVISION_HASH_LENGTH]}"


def is_config_revision_name(name: str, candidate: str) -> bool:
    prefix = f"{configmap_name(name)}-"
    suffix = candidate[len(prefix) :]
    return candidate.startswith(prefix) and len(suffix) == CONFIG_REVISION_HASH_LENGTH and suffix.isalnum()


def broker_name(body: Mapping[str, Any]) -> str:
    return str(spec_of(body).get("brokerName") or meta(body)["name"])


def cluster_name(body: Mapping[str, Any]) -> str:
    return str(spec_of(body).get("clusterName") or "DefaultCluster")


def replicas(body: Mapping[str, Any]) -> int:
    return 1 + int(spec_of(body).get("slaves", 1))


def pod_name(name: str, ordinal: int) -> str:
    return f"{statefulset_name(name)}-{ordinal}"


def pod_host(name: str, namespace: str, ordinal: int) -> str:
    return f"{pod_name(name, ordinal)}.{headless_service_name(name)}.{namespace}.svc"


def pvc_name(name: str, ordinal: int) -> str:
    return f"{DATA_VOLUME}-{statefulset_name(name)}-{ordinal}"


def grpc_endpoint(body: Mapping[str, Any]) -> str | None:
    """What a RocketMQ 5.x SDK dials (its access point): the headless Service, `<name>-headless.<ns>.svc:<port>`,
    which resolves to every broker of the group; any of them answers QueryRoute for every group of the cluster,
    and the routes name each master's own `<pod>.<name>-headless.<ns>.svc:<port>`. None when gRPC is off."""
    served = build_grpc.port(body)
    if served is None:
        return None
    return f"{headless_service_name(meta(body)['name'])}.{meta(body)['namespace']}.svc:{served}"


def namesrv_address(body: Mapping[str, Any]) -> str:
    """Name servers are addressed by the NameServerSet's headless Service: scaling them restarts nothing."""
    ref = spec_of(body).get("nameServerSetRef") or {}
    if ref.get("address"):
        return str(ref["address"])
    ns = ref.get("namespace") or meta(body)["namespace"]
    return build_namesrv.address(str(ref.get("name", "")), ns)


# --- broker.yaml ------------------------------------------------------------------------------------


def broker_config(body: Mapping[str, Any]) -> dict[str, Any]:
    """The broker.yaml content shared by every pod of the group; brokerId comes from the pod index."""
    spec = spec_of(body)
    cfg = spec.get("brokerConfig") or {}
    out: dict[str, Any] = {}
    for key, value in (cfg.get("extra") or {}).items():
        if key not in RESERVED_CONFIG_KEYS:
            out[str(key)] = str(value)
    out.update(
        {
            "autoCreateTopicEnable": bool(cfg.get("autoCreateTopicEnable", False)),
            "fileReservedTime": int(cfg.get("fileReservedTime", 72)),
            "diskMaxUsedSpaceRatio": int(cfg.get("diskMaxUsedSpaceRatio", 75)),
            "brokerClusterName": cluster_name(body),
            "brokerName": broker_name(body),
            "brokerRole": "SYNC_MASTER" if spec.get("replicationMode") == "SYNC" else "ASYNC_MASTER",
            "flushDiskType": "SYNC_FLUSH" if spec.get("flushMode") == "SYNC" else "ASYNC_FLUSH",
            "namesrvAddr": namesrv_address(body),
            "listenPort": ports.BROKER_PORT,
            "haListenPort": ports.BROKER_HA_PORT,
            "httpPort": ports.BROKER_HTTP_PORT,
            "grpcListenPort": build_grpc.listen_port(body),
            "storePathRootDir": c.DATA_DIR,
        }
    )
    out.update(build_acl.broker_config(build_acl.source(body, cluster_name(body))))  # spec.acl
    out.update(build_tls.broker_config(build_tls.source(body)))  # spec.tls
    return out


def config_data(body: Mapping[str, Any]) -> dict[str, str]:
    return {c.CONFIG_FILE: yaml.safe_dump(broker_config(body), sort_keys=True)}


def configmap(body: Mapping[str, Any]) -> Manifest:
    """This config revision's ConfigMap, immutable: a new config is a new ConfigMap (and a roll)."""
    name = meta(body)["name"]
    data = config_data(body)
    labels = common_labels(name, COMPONENT, cluster_name(body))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(body, config_revision_name(name, data), labels),
        "immutable": True,
        "data": data,
    }


# --- pods and StatefulSet ---------------------------------------------------------------------------


def _affinity(body: Mapping[str, Any]) -> dict[str, Any]:
    name = meta(body)["name"]
    mode = spec_of(body).get("podAntiAffinity", "required")
    same_group = {"matchLabels": selector_labels(name, COMPONENT)}
    other_groups = {"matchLabels": {c.LABEL_CLUSTER: cluster_name(body), c.LABEL_COMPONENT: COMPONENT}}
    zone_spread = {
        "weight": 50,
        "podAffinityTerm": {"topologyKey": "topology.kubernetes.io/zone", "labelSelector": other_groups},
    }
    anti: dict[str, Any] = {"preferredDuringSchedulingIgnoredDuringExecution": [zone_spread]}
    host_term = {"topologyKey": "kubernetes.io/hostname", "labelSelector": same_group}
    if mode == "required":
        anti["requiredDuringSchedulingIgnoredDuringExecution"] = [host_term]
    elif mode == "preferred":
        anti["preferredDuringSchedulingIgnoredDuringExecution"].insert(0, {"weight": 100, "podAffinityTerm": host_term})
    return {"podAntiAffinity": anti}


def pod_template(body: Mapping[str, Any], restart_token: str | None = None) -> Manifest:
    """`restart_token` (a manual rolling update's number) goes into a template annotation: changing it rolls
    every pod once."""
    name, spec = meta(body)["name"], spec_of(body)
    headless = headless_service_name(name)
    pod_sc, ctr_sc = restricted_security_context()
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {
            "name": "KROCKET_BROKER_ID",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{c.LABEL_POD_INDEX}']"}},
        },
        {"name": "KROCKET_ADVERTISE_HOST", "value": f"$(POD_NAME).{headless}.$(POD_NAMESPACE).svc"},
        {"name": "KROCKET_NAMESRV_ADDR", "value": namesrv_address(body)},
    ]
    container: dict[str, Any] = {
        "name": "broker",
        "image": spec.get("image", c.DEFAULT_IMAGE),
        "imagePullPolicy": spec.get("imagePullPolicy", "IfNotPresent"),
        "args": ["broker", "--config", f"{c.CONFIG_DIR}/{c.CONFIG_FILE}"],
        "env": env,
        "ports": [
            {"name": "remoting", "containerPort": ports.BROKER_PORT, "protocol": "TCP"},
            {"name": "ha", "containerPort": ports.BROKER_HA_PORT, "protocol": "TCP"},
            {"name": "http", "containerPort": ports.BROKER_HTTP_PORT, "protocol": "TCP"},
            *build_grpc.container_ports(body),
        ],
        # A crashed broker replays its commit log before /healthz answers: give recovery time.
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 120,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "securityContext": ctr_sc,
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": c.DATA_DIR},
            {"name": "config", "mountPath": c.CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    container["resources"] = container_resources(COMPONENT, spec.get("resources"))
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_revision_name(name, config_data(body))}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if (spec.get("storage") or {}).get("ephemeral"):
        volumes.insert(0, {"name": DATA_VOLUME, "emptyDir": {}})
    add_security_volumes(body, container, volumes)
    labels = common_labels(name, COMPONENT, cluster_name(body))
    template: Manifest = {
        "metadata": {
            "labels": labels,
            # Changing broker.yaml changes this hash, which rolls the pods in the safe order.
            "annotations": {
                c.ANN_CONFIG_HASH: stable_hash(broker_config(body)),
                **({c.ANN_MANUAL_ROLL: restart_token} if restart_token else {}),
            },
        },
        "spec": {
            "containers": [container],
            "securityContext": pod_sc,
            "terminationGracePeriodSeconds": 60,
            "affinity": _affinity(body),
            "volumes": volumes,
        },
    }
    return apply_pod_template(template, spec.get("podTemplate"))


def add_security_volumes(body: Mapping[str, Any], container: dict[str, Any], volumes: list[dict[str, Any]]) -> None:
    """spec.acl and spec.tls: their Secrets mounted read-only, and the probes on HTTPS when the HTTP port is."""
    acl_source, tls_source = build_acl.source(body, cluster_name(body)), build_tls.source(body)
    if acl_source is not None:
        volumes.append(build_acl.volume(acl_source))
        container["volumeMounts"].append(build_acl.volume_mount())
    if tls_source is not None:
        volumes.append(build_tls.volume(tls_source))
        container["volumeMounts"].append(build_tls.volume_mount())
    build_tls.set_probe_scheme(container, body)


def volume_claim_template(body: Mapping[str, Any]) -> Manifest:
    storage = spec_of(body).get("storage") or {}
    name = meta(body)["name"]
    vct: Manifest = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": DATA_VOLUME, "labels": common_labels(name, COMPONENT, cluster_name(body))},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": str(storage.get("size", DEFAULT_STORAGE_SIZE))}},
        },
    }
    if storage.get("storageClassName"):
        vct["spec"]["storageClassName"] = storage["storageClassName"]
    return vct


def statefulset(
    body: Mapping[str, Any],
    *,
    partition: int = 0,
    replica_count: int | None = None,
    restart_token: str | None = None,
) -> Manifest:
    """The group's StatefulSet.

    Updates use `RollingUpdate` with a `partition` the operator moves: 1 while slaves roll (highest ordinal
    first, each waited on until Ready by the StatefulSet controller), then 0 once a slave is in sync, so the
    master (ordinal 0) restarts last. `replica_count` lets the reconciler hold a scale-down.
    """
    name, spec = meta(body)["name"], spec_of(body)
    storage = spec.get("storage") or {}
    template = pod_template(body, restart_token)
    retention = storage.get("retentionPolicy") or {}
    sts_spec: dict[str, Any] = {
        "replicas": replicas(body) if replica_count is None else replica_count,
        "serviceName": headless_service_name(name),
        "podManagementPolicy": "OrderedReady",
        "selector": {"matchLabels": selector_labels(name, COMPONENT)},
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
        "persistentVolumeClaimRetentionPolicy": {
            "whenDeleted": retention.get("whenDeleted", "Retain"),
            "whenScaled": retention.get("whenScaled", "Retain"),
        },
        "template": template,
    }
    if not storage.get("ephemeral"):
        sts_spec["volumeClaimTemplates"] = [volume_claim_template(body)]
    labels = common_labels(name, COMPONENT, cluster_name(body))
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": child_metadata(body, statefulset_name(name), labels, {c.ANN_TEMPLATE_HASH: stable_hash(template)}),
        "spec": sts_spec,
    }


def headless_service(body: Mapping[str, Any]) -> Manifest:
    name = meta(body)["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(
            body, headless_service_name(name), common_labels(name, COMPONENT, cluster_name(body))
        ),
        "spec": {
            "clusterIP": "None",
            # Per-pod DNS must exist before a pod is Ready: a slave resolves its master to replicate.
            "publishNotReadyAddresses": True,
            "selector": selector_labels(name, COMPONENT),
            "ports": [
                {"name": "remoting", "port": ports.BROKER_PORT, "targetPort": "remoting", "protocol": "TCP"},
                {"name": "ha", "port": ports.BROKER_HA_PORT, "targetPort": "ha", "protocol": "TCP"},
                {"name": "http", "port": ports.BROKER_HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                *build_grpc.service_ports(body),
            ],
        },
    }


def disruption_budget(body: Mapping[str, Any]) -> Manifest:
    name = meta(body)["name"]
    return pdb(body, name, COMPONENT, cluster_name(body), 1)


def children(
    body: Mapping[str, Any],
    *,
    partition: int = 0,
    replica_count: int | None = None,
    restart_token: str | None = None,
) -> list[Manifest]:
    return [
        configmap(body),
        headless_service(body),
        statefulset(body, partition=partition, replica_count=replica_count, restart_token=restart_token),
        disruption_budget(body),
    ]


# --- decisions --------------------------------------------------------------------------------------


def check_storage_change(body: Mapping[str, Any], existing_sts: Mapping[str, Any] | None) -> str | None:
    """Refuse a storage class change or a shrink against the live StatefulSet.

    Returns the new size to expand PVCs to, or None when nothing changes. Raises SpecError when refused.
    """
    storage = spec_of(body).get("storage") or {}
    if existing_sts is None or storage.get("ephemeral"):
        return None
    vcts = (existing_sts.get("spec") or {}).get("volumeClaimTemplates") or []
    vct = next((v for v in vcts if (v.get("metadata") or {}).get("name") == DATA_VOLUME), None)
    if vct is None:
        return None
    old_class = (vct.get("spec") or {}).get("storageClassName")
    new_class = storage.get("storageClassName")
    if new_class and old_class and new_class != old_class:
        raise SpecError(
            "NotSupported",
            f"storage.storageClassName cannot change ({old_class!r} -> {new_class!r}); "
            "create a new BrokerGroup and move topics to it instead",
        )
    old_size = str(vct["spec"]["resources"]["requests"]["storage"])
    new_size = str(storage.get("size", DEFAULT_STORAGE_SIZE))
    if parse_quantity(new_size) < parse_quantity(old_size):
        raise SpecError(
            "NotSupported",
            f"storage.size cannot shrink ({old_size} -> {new_size}); volumes only grow. Set it back to >= {old_size}",
        )
    return new_size if parse_quantity(new_size) > parse_quantity(old_size) else None


@dataclass(frozen=True)
class Rollout:
    partition: int
    rolling: bool
    reason: str
    message: str


def rollout(
    *,
    replica_count: int,
    template_changed: bool,
    sts: Mapping[str, Any] | None,
    slave_in_sync: bool,
) -> Rollout:
    """Decide the StatefulSet partition for a safe roll: slaves first, master last and only after a slave
    is in sync. With no slaves there is nobody to fail over to, so the master rolls at once.

    While the partition is held at 1, the master is released only when the StatefulSet controller has seen
    the current template (status.observedGeneration), every slave runs it and is ready, and one is in sync.
    """
    sts = sts or {}
    current = int(
        (((sts.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition", 0)
    )
    status = sts.get("status") or {}
    pending = _revision_pending(status)
    if replica_count <= 1:
        rolling = template_changed or pending
        return Rollout(0, rolling, "RollingUpdateInProgress" if rolling else "Idle", "no slaves: master restarts")
    if template_changed:
        return Rollout(1, True, "RollingUpdateInProgress", "rolling slaves first (highest ordinal first)")
    if current == 0:
        if pending:
            return Rollout(0, True, "RollingUpdateInProgress", "rolling the master")
        return Rollout(0, False, "Idle", "all pods run the current revision")
    generation = (sts.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    caught_up = generation is None or (observed is not None and int(observed) >= int(generation))
    slaves_done = caught_up and int(status.get("updatedReplicas", 0) or 0) >= replica_count - 1
    all_ready = int(status.get("readyReplicas", 0) or 0) >= replica_count
    if slaves_done and all_ready and slave_in_sync:
        return Rollout(0, True, "RollingUpdateInProgress", "slaves updated and in sync: rolling the master")
    if slaves_done and all_ready:
        return Rollout(1, True, "WaitingForSlaveInSync", "slaves updated; waiting for a slave to catch up")
    return Rollout(1, True, "RollingUpdateInProgress", "rolling slaves (highest ordinal first)")


def _revision_pending(status: Mapping[str, Any]) -> bool:
    cur, upd = status.get("currentRevision"), status.get("updateRevision")
    return bool(cur and upd and cur != upd)


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int
    blocked: bool
    message: str


def scale(*, desired: int, current: int | None, master_ready: bool, skip_check: bool) -> ScaleDecision:
    """Slaves are removed highest ordinal first (the StatefulSet controller does that) and only while the
    master is Ready, so readers that used the removed slave fall back to it. `skip_check` overrides.
    """
    if current is None or desired >= current:
        return ScaleDecision(desired, False, "")
    if master_ready or skip_check:
        return ScaleDecision(desired, False, f"removing slaves {list(range(desired, current))}")
    return ScaleDecision(
        current,
        True,
        f"cannot remove slaves {list(range(desired, current))} while the master is not Ready "
        f'(consumers reading from them need it); wait, or set annotation {c.ANN_SKIP_DRAIN_CHECK}="true"',
    )
