"""RocketMQ 5.x gRPC on BrokerGroups: the port on the pods, the headless Service and the NetworkPolicy, broker.yaml
as the broker's own loader reads it, the TLS flag, the CRD fields, then a change applied by kopf against kmock."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from krocket.broker.config import BrokerConfig
from krocket.common import ports
from krocket.common.config import build_config
from krocket.operator import build_brokergroup as bg
from krocket.operator import build_grpc, build_security, build_tls, status_brokergroup
from krocket.operator import constants as c
from krocket.operator.build_security import NetworkPolicySettings

from tests.operator.api import BGS, STS, bg_body, create, patch, path
from tests.operator.bodies import make_body
from tests.operator.crdschema import apply_defaults, cel_rules, validate_cr, version_schema
from tests.operator.kopf_harness import FakeBrokers, StampingEmulator, get, running_operator, wait_for

K8S_VERSIONS = ["1.30", "1.32"]
SVCS, NETPOLS, CMS = "v1/services", "networking.k8s.io/v1/networkpolicies", "v1/configmaps"


def group(crds, **spec: Any) -> dict[str, Any]:
    body = make_body("BrokerGroup", "broker-a", {"nameServerSetRef": {"name": "ns1"}, "clusterName": "c1", **spec})
    return apply_defaults(crds["BrokerGroup"], body)


def loaded_config(body: dict[str, Any]) -> BrokerConfig:
    """broker.yaml as the operator writes it, read by the broker's own config loader."""
    return build_config(BrokerConfig, yaml.safe_load(bg.config_data(body)[c.CONFIG_FILE]), {}, {})


def container_ports(body: dict[str, Any]) -> dict[str, int]:
    (container,) = bg.pod_template(body)["spec"]["containers"]
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def service_ports(body: dict[str, Any]) -> dict[str, tuple[int, str]]:
    return {p["name"]: (p["port"], p["targetPort"]) for p in bg.headless_service(body)["spec"]["ports"]}


def client_rule_ports(body: dict[str, Any]) -> list[int]:
    """The ports of the NetworkPolicy rule that admits every client (the one with no `from`)."""
    policy = build_security.network_policy(body, c.COMPONENT_BROKER, NetworkPolicySettings(), "c1")
    (rule,) = [r for r in policy["spec"]["ingress"] if "from" not in r]
    return [p["port"] for p in rule["ports"]]


# --- builders -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_grpc_is_served_and_exposed_by_default(crds, version):
    body = group(crds)
    for manifest in (bg.statefulset(body), bg.headless_service(body)):
        kubernetes_validate.validate(manifest, version, strict=True)
    kubernetes_validate.validate(
        build_security.network_policy(body, c.COMPONENT_BROKER, NetworkPolicySettings(), "c1"), version, strict=True
    )
    assert container_ports(body)["grpc"] == ports.BROKER_GRPC_PORT == 8081
    assert service_ports(body)["grpc"] == (8081, "grpc"), "the headless Service, targeting the named port"
    assert client_rule_ports(body) == [ports.BROKER_PORT, 8081], "open to clients like remoting"
    assert loaded_config(body).grpc_listen_port == 8081
    assert bg.grpc_endpoint(body) == "broker-a-headless.mq.svc:8081"


def test_grpc_port_moves_everywhere_at_once(crds):
    body = group(crds, grpc={"port": 9091})
    assert container_ports(body)["grpc"] == 9091
    assert service_ports(body)["grpc"] == (9091, "grpc")
    assert client_rule_ports(body) == [ports.BROKER_PORT, 9091]
    assert loaded_config(body).grpc_listen_port == 9091
    assert bg.grpc_endpoint(body) == "broker-a-headless.mq.svc:9091"


def test_disabled_grpc_exposes_no_port_and_is_not_served(crds):
    body = group(crds, grpc={"enabled": False})
    assert set(container_ports(body)) == {"remoting", "ha", "http"}
    assert set(service_ports(body)) == {"remoting", "ha", "http"}
    assert client_rule_ports(body) == [ports.BROKER_PORT]
    assert bg.broker_config(body)["grpcListenPort"] == 0
    assert loaded_config(body).grpc_listen_port == 0, "0: the broker serves no gRPC"
    assert bg.grpc_endpoint(body) is None


def test_turning_grpc_off_rolls_the_group(crds):
    on, off = bg.statefulset(group(crds)), bg.statefulset(group(crds, grpc={"enabled": False}))
    assert on["metadata"]["annotations"][c.ANN_TEMPLATE_HASH] != off["metadata"]["annotations"][c.ANN_TEMPLATE_HASH]
    config = on["spec"]["template"]["metadata"]["annotations"][c.ANN_CONFIG_HASH]
    assert config != off["spec"]["template"]["metadata"]["annotations"][c.ANN_CONFIG_HASH]


def test_extra_config_cannot_set_the_grpc_port(crds):
    body = group(crds, brokerConfig={"extra": {"grpcListenPort": "9999"}})
    assert bg.broker_config(body)["grpcListenPort"] == 8081, "the operator owns the port"
    (extra_rule,) = [r for p, r in cel_rules(version_schema(crds["BrokerGroup"])) if p == "spec.brokerConfig.extra"]
    for key in bg.RESERVED_CONFIG_KEYS:
        assert f"'{key}'" in extra_rule, f"the CRD refuses brokerConfig.extra.{key} too"


# --- TLS on the gRPC port -----------------------------------------------------------------------------


def test_grpc_tls_follows_spec_tls(crds):
    tls = {"secretRef": {"name": "broker-a-certs"}}
    assert "grpcTlsEnable" not in bg.broker_config(group(crds)), "no spec.tls: the broker's default (plaintext)"
    secured = loaded_config(group(crds, tls=tls))
    assert secured.grpc_tls_enable is True and secured.tls_server_cert_path == build_tls.CERT_FILE
    assert secured.extra == {}, "every key the operator writes is one the broker knows"
    plain = loaded_config(group(crds, tls={**tls, "grpc": False}))
    assert (plain.grpc_tls_enable, plain.tls_enable, plain.http_tls_enable) == (False, True, True)
    assert build_tls.source(group(crds, tls={**tls, "grpc": False})) == build_tls.TlsSource(
        "broker-a-certs", False, "enforcing", True, False
    )


# --- the CRD ------------------------------------------------------------------------------------------


def test_crd_grpc_fields_defaults_and_limits(crds):
    body = group(crds, tls={"secretRef": {"name": "x"}})
    assert body["spec"]["grpc"] == {"enabled": True, "port": ports.BROKER_GRPC_PORT}, "the CRD's defaults are ours"
    assert body["spec"]["tls"]["grpc"] is True
    assert validate_cr(crds["BrokerGroup"], body) == []
    for bad in ({"port": 0}, {"port": 65536}, {"enabled": "yes"}):
        assert validate_cr(crds["BrokerGroup"], group(crds, grpc=bad)), bad
    assert validate_cr(crds["BrokerGroup"], group(crds, grpc={"bogus": 1}))[0].startswith("PRUNED spec.grpc")
    rules = dict(cel_rules(version_schema(crds["BrokerGroup"])))
    assert "10911, 10912, 10913" in rules["spec.grpc"], "the other broker ports are refused"
    spec = version_schema(crds["BrokerGroup"])["properties"]["spec"]["properties"]
    for field in (spec["grpc"], spec["grpc"]["properties"]["enabled"], spec["tls"]["properties"]["grpc"]):
        assert field.get("description"), field


def test_status_names_the_grpc_endpoint(crds):
    on = status_brokergroup.status(group(crds), None, [], 50)
    assert on["grpcEndpoint"] == "broker-a-headless.mq.svc:8081"
    off = status_brokergroup.status(group(crds, grpc={"enabled": False}), None, [], 50)
    assert off["grpcEndpoint"] is None, "None removes a stale endpoint from the status (a merge patch)"
    assert validate_cr(crds["BrokerGroup"], {**group(crds), "status": on}) == []


def test_grpc_builders_agree_on_the_port_name():
    body = make_body("BrokerGroup", "g", {"grpc": {"port": 7000}})
    (cport,), (sport,) = build_grpc.container_ports(body), build_grpc.service_ports(body)
    assert cport["name"] == sport["targetPort"] == build_grpc.PORT_NAME
    assert build_grpc.port(make_body("BrokerGroup", "g", {})) == ports.BROKER_GRPC_PORT, "absent spec.grpc: on"


# --- kopf against kmock -------------------------------------------------------------------------------


def _grpc_ports(k) -> dict[str, Any]:
    svc, policy = get(k, SVCS, "mq", "broker-a-headless"), get(k, NETPOLS, "mq", "broker-a-network")
    (container,) = get(k, STS, "mq", "broker-a")["spec"]["template"]["spec"]["containers"]
    return {
        "container": [p["containerPort"] for p in container["ports"] if p["name"] == "grpc"],
        "service": [p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc"],
        "policy": [p["port"] for r in policy["spec"]["ingress"] if "from" not in r for p in r["ports"]],
    }


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_turning_grpc_off_and_on_updates_the_children_and_status(k8s):
    async with running_operator(k8s, admin=FakeBrokers()):
        await create(k8s, "brokergroups", "mq", bg_body("broker-a"))
        await wait_for(lambda: get(k8s, NETPOLS, "mq", "broker-a-network") and get(k8s, STS, "mq", "broker-a"),
                       what="children")  # fmt: skip
        assert _grpc_ports(k8s) == {"container": [8081], "service": [8081], "policy": [10911, 8081]}
        await wait_for(lambda: (get(k8s, BGS, "mq", "broker-a").get("status") or {}).get("grpcEndpoint")
                       == "broker-a-headless.mq.svc:8081", what="status.grpcEndpoint")  # fmt: skip

        await patch(k8s, path("brokergroups", "mq", "broker-a"), {"spec": {"grpc": {"enabled": False}}})
        await wait_for(lambda: _grpc_ports(k8s) == {"container": [], "service": [], "policy": [10911]},
                       what="no gRPC port on the pods, the Service and the NetworkPolicy")  # fmt: skip
        await wait_for(lambda: "grpcEndpoint" not in get(k8s, BGS, "mq", "broker-a")["status"],
                       what="status.grpcEndpoint removed")  # fmt: skip
        sts = get(k8s, STS, "mq", "broker-a")
        config = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
        broker_yaml = yaml.safe_load(get(k8s, CMS, "mq", config["configMap"]["name"])["data"][c.CONFIG_FILE])
        assert broker_yaml["grpcListenPort"] == 0

        await patch(k8s, path("brokergroups", "mq", "broker-a"), {"spec": {"grpc": {"enabled": True, "port": 9091}}})
        await wait_for(lambda: _grpc_ports(k8s) == {"container": [9091], "service": [9091], "policy": [10911, 9091]},
                       what="gRPC back on port 9091")  # fmt: skip
