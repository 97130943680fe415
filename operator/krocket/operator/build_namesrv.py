"""NameServerSet -> StatefulSet, headless Service, client Service, PodDisruptionBudget (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from krocket.common import ports
from krocket.operator import build_acl, build_tls
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

COMPONENT = c.COMPONENT_NAMESRV


def headless_service_name(name: str) -> str:
    return f"{name}-headless"


def client_service_name(name: str) -> str:
    return name


def statefulset_name(name: str) -> str:
    return name


def replicas(body: Mapping[str, Any]) -> int:
    return int(spec_of(body).get("replicas", 2))


def address(name: str, namespace: str) -> str:
    """The DNS address brokers and clients use: the headless Service resolves to every ready name server."""
    return f"{headless_service_name(name)}.{namespace}.svc:{ports.NAMESRV_PORT}"


def service_address(name: str, namespace: str) -> str:
    """The client Service's address: one name server at a time, for clients that take a single address."""
    return f"{client_service_name(name)}.{namespace}.svc:{ports.NAMESRV_PORT}"


def pod_addresses(name: str, namespace: str, replicas: int) -> list[str]:
    """Per-pod stable DNS names, for RocketMQ clients that want a `;`-joined list."""
    svc = headless_service_name(name)
    return [f"{statefulset_name(name)}-{i}.{svc}.{namespace}.svc:{ports.NAMESRV_PORT}" for i in range(replicas)]


def _pod_template(body: Mapping[str, Any]) -> Manifest:
    name = meta(body)["name"]
    spec = spec_of(body)
    pod_sc, ctr_sc = restricted_security_context()
    container: dict[str, Any] = {
        "name": "namesrv",
        "image": spec.get("image", c.DEFAULT_NAMESRV_IMAGE),
        "imagePullPolicy": spec.get("imagePullPolicy", "IfNotPresent"),
        "args": [
            "namesrv",
            "--listen-port",
            str(ports.NAMESRV_PORT),
            "--http-port",
            str(ports.NAMESRV_HTTP_PORT),
        ],
        "ports": [
            {"name": "remoting", "containerPort": ports.NAMESRV_PORT, "protocol": "TCP"},
            {"name": "http", "containerPort": ports.NAMESRV_HTTP_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "securityContext": ctr_sc,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    container["resources"] = container_resources(COMPONENT, spec.get("resources"))
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    add_security(body, container, volumes)
    template: Manifest = {
        "metadata": {"labels": common_labels(name, COMPONENT)},
        "spec": {
            "containers": [container],
            "securityContext": pod_sc,
            "terminationGracePeriodSeconds": 30,
            "volumes": volumes,
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": selector_labels(name, COMPONENT)},
                            },
                        }
                    ]
                }
            },
        },
    }
    return apply_pod_template(template, spec.get("podTemplate"))


def add_security(body: Mapping[str, Any], container: dict[str, Any], volumes: list[dict[str, Any]]) -> None:
    """spec.acl (--acl) and spec.tls (--tls-*): their Secrets mounted read-only, probes on HTTPS when needed."""
    acl_source, tls_source = build_acl.source(body, None), build_tls.source(body)
    container["args"] += build_acl.namesrv_args(acl_source) + build_tls.namesrv_args(tls_source)
    if acl_source is not None:
        volumes.append(build_acl.volume(acl_source))
        container["volumeMounts"].append(build_acl.volume_mount())
    if tls_source is not None:
        volumes.append(build_tls.volume(tls_source))
        container["volumeMounts"].append(build_tls.volume_mount())
    build_tls.set_probe_scheme(container, body)


def statefulset(body: Mapping[str, Any]) -> Manifest:
    name = meta(body)["name"]
    template = _pod_template(body)
    labels = common_labels(name, COMPONENT)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": child_metadata(body, statefulset_name(name), labels, {c.ANN_TEMPLATE_HASH: stable_hash(template)}),
        "spec": {
            "replicas": replicas(body),
            "serviceName": headless_service_name(name),
            # Name servers share nothing, so they may start and stop in parallel.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector_labels(name, COMPONENT)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "template": template,
        },
    }


def headless_service(body: Mapping[str, Any]) -> Manifest:
    name = meta(body)["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(body, headless_service_name(name), common_labels(name, COMPONENT)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": selector_labels(name, COMPONENT),
            "ports": [
                {"name": "remoting", "port": ports.NAMESRV_PORT, "targetPort": "remoting", "protocol": "TCP"},
                {"name": "http", "port": ports.NAMESRV_HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
            ],
        },
    }


def client_service(body: Mapping[str, Any]) -> Manifest:
    name = meta(body)["name"]
    svc_spec = spec_of(body).get("service") or {}
    md = child_metadata(body, client_service_name(name), common_labels(name, COMPONENT), svc_spec.get("annotations"))
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": md,
        "spec": {
            "type": svc_spec.get("type", "ClusterIP"),
            "selector": selector_labels(name, COMPONENT),
            "ports": [
                {"name": "remoting", "port": ports.NAMESRV_PORT, "targetPort": "remoting", "protocol": "TCP"},
                {"name": "http", "port": ports.NAMESRV_HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
            ],
        },
    }


def disruption_budget(body: Mapping[str, Any]) -> Manifest:
    name = meta(body)["name"]
    max_unavailable = int((spec_of(body).get("pdb") or {}).get("maxUnavailable", 1))
    return pdb(body, name, COMPONENT, None, max_unavailable)


def children(body: Mapping[str, Any]) -> list[Manifest]:
    """Every object a NameServerSet owns, in the order they should be applied."""
    return [headless_service(body), client_service(body), statefulset(body), disruption_budget(body)]
