"""Security wiring: NetworkPolicy, ACL and TLS on BrokerGroups and NameServerSets.

Builders (validated against the Kubernetes schemas and against what the broker and name server actually parse),
then the operator against kmock: the children it creates, and a missing Secret as a condition, not a crash.
"""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from krocket.broker.config import BrokerConfig
from krocket.common import ports
from krocket.common.config import build_config
from krocket.namesrv.command import add_arguments
from krocket.operator import build_acl, build_brokergroup, build_namesrv, build_security, build_tls
from krocket.operator import constants as c
from krocket.operator.broker_admin import DnsResolver
from krocket.operator.build_security import NetworkPolicySettings

from tests.operator.api import G, bg_body, create, nss_body, patch, path
from tests.operator.bodies import make_body
from tests.operator.kopf_harness import StampingEmulator, condition, get, running_operator, wait_for
from tests.operator.test_operator_metrics import free_port

K8S_VERSIONS = ["1.30", "1.32"]
OPERATOR_NS = NetworkPolicySettings(operator_namespace="krocket-system", monitoring_namespace_labels={"team": "mon"})

# cert-manager's Certificate (cert-manager.io/v1): the fields the operator writes, as cert-manager's CRD types them.
CERTIFICATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "kind": {"const": "Certificate"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "required": ["secretName", "issuerRef"],
            "additionalProperties": False,
            "properties": {
                "secretName": {"type": "string", "minLength": 1},
                "commonName": {"type": "string", "maxLength": 64},
                "dnsNames": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "usages": {
                    "type": "array",
                    "items": {
                        "enum": ["server auth", "client auth", "digital signature", "key encipherment", "signing"]
                    },
                },
                "privateKey": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                        "size": {"type": "integer"},
                        "rotationPolicy": {"enum": ["Never", "Always"]},
                    },
                },
                "issuerRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "kind": {"type": "string"},
                        "group": {"type": "string"},
                    },
                },
            },
        },
    },
}


def group(crds, name: str = "broker-a", **spec: Any) -> dict[str, Any]:
    from tests.operator.crdschema import apply_defaults

    return apply_defaults(
        crds["BrokerGroup"],
        make_body("BrokerGroup", name, {"nameServerSetRef": {"name": "ns1"}, "clusterName": "c1", **spec}),
    )


def nameservers(crds, name: str = "ns1", **spec: Any) -> dict[str, Any]:
    from tests.operator.crdschema import apply_defaults

    return apply_defaults(crds["NameServerSet"], make_body("NameServerSet", name, spec))


def _rule_for(policy: dict[str, Any], port: int) -> dict[str, Any]:
    return next(r for r in policy["spec"]["ingress"] if port in [p["port"] for p in r["ports"]])


# --- NetworkPolicy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_broker_network_policy_opens_remoting_and_fences_ha_and_admin(crds, version):
    policy = build_security.network_policy(group(crds), c.COMPONENT_BROKER, OPERATOR_NS, "c1")
    kubernetes_validate.validate(policy, version, strict=True)
    own_pods = build_brokergroup.selector_labels("broker-a", c.COMPONENT_BROKER)
    assert policy["spec"]["podSelector"] == {"matchLabels": own_pods}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert "from" not in _rule_for(policy, ports.BROKER_PORT)  # clients from anywhere
    assert _rule_for(policy, ports.BROKER_HA_PORT)["from"] == [{"podSelector": {"matchLabels": own_pods}}]
    operator, monitoring = _rule_for(policy, ports.BROKER_HTTP_PORT)["from"]
    assert operator == {
        "podSelector": {"matchLabels": {c.LABEL_NAME: "krocket", c.LABEL_COMPONENT: "operator"}},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "krocket-system"}},
    }
    assert monitoring == {"namespaceSelector": {"matchLabels": {"team": "mon"}}}
    assert policy["metadata"]["ownerReferences"][0]["kind"] == "BrokerGroup"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_nameserver_network_policy_and_monitoring_selector_from_the_resource(crds, version):
    selector = {"matchExpressions": [{"key": "purpose", "operator": "In", "values": ["monitoring"]}]}
    body = nameservers(crds, networkPolicy={"monitoringNamespaceSelector": selector})
    policy = build_security.network_policy(body, c.COMPONENT_NAMESRV, OPERATOR_NS)
    kubernetes_validate.validate(policy, version, strict=True)
    assert [[p["port"] for p in r["ports"]] for r in policy["spec"]["ingress"]] == [
        [ports.NAMESRV_PORT],
        [ports.NAMESRV_HTTP_PORT],
    ]
    assert _rule_for(policy, ports.NAMESRV_HTTP_PORT)["from"][1] == {"namespaceSelector": selector}


def test_network_settings_from_env():
    env = {
        "POD_NAMESPACE": "ops",
        "KROCKET_OPERATOR_POD_LABELS": "app=krocket-op, tier=control",
        "KROCKET_MONITORING_NAMESPACE_LABELS": "kubernetes.io/metadata.name=monitoring",
    }
    settings = build_security.settings_from_env(env)
    assert settings.operator_namespace == "ops"
    assert settings.operator_pod_labels == {"app": "krocket-op", "tier": "control"}
    assert settings.monitoring_namespace_labels == {"kubernetes.io/metadata.name": "monitoring"}
    assert build_security.settings_from_env({}, "from-sa").operator_namespace == "from-sa"
    with pytest.raises(ValueError, match="label pair"):
        build_security.parse_labels("novalue")


# --- ACL and TLS in the pods ----------------------------------------------------------------------------


def _broker_config_from(body: dict[str, Any]) -> BrokerConfig:
    """broker.yaml as the operator writes it, loaded by the broker's own config loader (camelCase keys)."""
    return build_config(BrokerConfig, yaml.safe_load(build_brokergroup.config_data(body)[c.CONFIG_FILE]), {}, {})


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_broker_acl_and_tls_wiring(crds, version):
    body = group(
        crds,
        acl={"secretRef": {"name": "my-acl"}},
        tls={"secretRef": {"name": "broker-a-certs"}, "mode": "permissive"},
    )
    sts = build_brokergroup.statefulset(body)
    kubernetes_validate.validate(sts, version, strict=True)
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["acl"]["secret"]["secretName"] == "my-acl"
    assert volumes["acl"]["secret"]["items"] == [{"key": "plain_acl.yml", "path": "plain_acl.yml"}]
    assert volumes["tls"]["secret"]["secretName"] == "broker-a-certs"
    container = pod["containers"][0]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    # read-only, and never subPath: the kubelet swaps a changed Secret in place and the broker re-reads it
    assert mounts["acl"] == {"name": "acl", "mountPath": build_acl.ACL_DIR, "readOnly": True}
    assert mounts["tls"] == {"name": "tls", "mountPath": build_tls.TLS_DIR, "readOnly": True}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    cfg = _broker_config_from(body)
    assert cfg.acl_enable and cfg.acl_config_file == f"{build_acl.ACL_DIR}/plain_acl.yml"
    assert cfg.tls_mode == "permissive" and cfg.tls_enable and cfg.http_tls_enable
    assert cfg.tls_server_cert_path == f"{build_tls.TLS_DIR}/tls.crt"
    assert cfg.tls_server_key_path == f"{build_tls.TLS_DIR}/tls.key"
    assert cfg.tls_client_trust_cert_path == f"{build_tls.TLS_DIR}/ca.crt"
    assert cfg.extra == {}  # every key the operator writes is one the broker knows


def test_no_security_leaves_the_pod_template_as_before(crds):
    """A group without acl/tls gets no new volumes, config keys or probe fields (its pods do not roll)."""
    body = group(crds)
    container = build_brokergroup.pod_template(body)["spec"]["containers"][0]
    assert {m["name"] for m in container["volumeMounts"]} == {"data", "config", "tmp"}
    assert "scheme" not in container["readinessProbe"]["httpGet"]
    assert not any(k.startswith(("acl", "tls", "httpTls")) for k in build_brokergroup.broker_config(body))
    assert DnsResolver().admin_url(body, 0).startswith("http://")
    assert DnsResolver().admin_url(group(crds, tls={"secretRef": {"name": "x"}}), 0).startswith("https://")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_nameserver_acl_and_tls_args_are_the_name_servers_own(crds, version):
    body = nameservers(
        crds, acl={"users": True, "clusterName": "c1"}, tls={"certManager": {"issuerRef": {"name": "ca"}}}
    )
    sts = build_namesrv.statefulset(body)
    kubernetes_validate.validate(sts, version, strict=True)
    container = sts["spec"]["template"]["spec"]["containers"][0]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(container["args"][1:])  # what `krocket namesrv` parses
    assert args.acl == f"{build_acl.ACL_DIR}/plain_acl.yml"
    assert (args.tls_mode, args.tls_cert, args.tls_key, args.http_tls) == (
        "enforcing",
        build_tls.CERT_FILE,
        build_tls.KEY_FILE,
        True,
    )
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["acl"]["secret"]["secretName"] == "c1-acl"  # the cluster's rendered Secret
    assert volumes["tls"]["secret"]["secretName"] == "ns1-tls"  # written by the Certificate
    assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"


def _covered(host: str, names: list[str]) -> bool:
    """A TLS client's check: an exact name, or a wildcard standing for exactly the first label."""
    return host in names or f"*.{host.split('.', 1)[1]}" in names


def test_certificate_names_every_pod_and_service(crds):
    body = group(crds, slaves=2, tls={"certManager": {"issuerRef": {"name": "mq-ca", "kind": "ClusterIssuer"}}})
    headless = build_brokergroup.headless_service_name("broker-a")
    cert = build_tls.certificate(body, c.COMPONENT_BROKER, [headless], headless, "c1")
    jsonschema.validate(cert, CERTIFICATE_SCHEMA)
    assert cert["spec"]["secretName"] == "broker-a-tls"
    assert cert["spec"]["issuerRef"] == {"name": "mq-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    names = cert["spec"]["dnsNames"]
    for ordinal in range(3):
        assert _covered(build_brokergroup.pod_host("broker-a", "mq", ordinal), names)
    assert f"{headless}.mq.svc" in names and f"{headless}.mq.svc.cluster.local" in names
    assert build_tls.certificate(group(crds), c.COMPONENT_BROKER, [headless], headless) is None

    nss = nameservers(crds, tls={"certManager": {"issuerRef": {"name": "mq-ca"}}})
    ncert = build_tls.certificate(nss, c.COMPONENT_NAMESRV, ["ns1", "ns1-headless"], "ns1-headless")
    jsonschema.validate(ncert, CERTIFICATE_SCHEMA)
    assert {"ns1.mq.svc", "ns1-headless.mq.svc", "*.ns1-headless.mq.svc"} <= set(ncert["spec"]["dnsNames"])
    with pytest.raises(ValueError):
        ipaddress.ip_address(ncert["spec"]["commonName"])  # a DNS name, at most 64 characters (schema)


def test_crd_accepts_security_fields_and_refuses_both_acl_sources(crds):
    from tests.operator.crdschema import cel_rules, validate_cr, version_schema

    body = group(
        crds,
        acl={"users": True},
        tls={"certManager": {"issuerRef": {"name": "ca"}}},
        networkPolicy={"enabled": False, "monitoringNamespaceSelector": {"matchLabels": {"a": "b"}}},
    )
    assert validate_cr(crds["BrokerGroup"], body) == []
    for kind in ("BrokerGroup", "NameServerSet"):
        rules = dict(cel_rules(version_schema(crds[kind])))
        assert rules["spec.tls"] == "has(self.certManager) != has(self.secretRef)"
        assert rules["spec.acl"] == "!(has(self.secretRef) && has(self.users) && self.users)"
    bad = group(crds, tls={"mode": "sometimes", "secretRef": {"name": "x"}})
    assert any("tls.mode" in e for e in validate_cr(crds["BrokerGroup"], bad))


# --- against the emulated API server ------------------------------------------------------------------


def _bg(name: str, **spec: Any) -> dict[str, Any]:
    spec = {"storage": {"size": "1Gi", "ephemeral": True}, **spec}
    return bg_body(name, ref={"address": "ns.example:9876"}, slaves=1, **spec)


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {k: build_acl.b64(v) for k, v in data.items()},
    }


ACL_TEXT = """
accounts:
  - {accessKey: ops-admin, secretKey: s3cret-admin, admin: true}
  - {accessKey: app, secretKey: s3cret-app}
"""


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_missing_acl_secret_is_a_condition_then_the_operator_signs_with_its_admin(k8s):
    async with running_operator(k8s) as op:
        await create(k8s, "brokergroups", "mq", _bg("broker-a", acl={"secretRef": {"name": "team-acl"}}))
        bg = await wait_for(
            lambda: (
                (o := get(k8s, f"{G}/brokergroups", "mq", "broker-a"))
                and (condition(o, "SecurityReady") or {}).get("reason") == "AclSecretNotFound"
                and o
            ),
            what="SecurityReady=False AclSecretNotFound",
        )
        assert "team-acl" in condition(bg, "SecurityReady")["message"]
        sts = get(k8s, "apps/v1/statefulsets", "mq", "broker-a")  # applied anyway: the pods wait for the Secret
        volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
        assert volumes["acl"]["secret"]["secretName"] == "team-acl"
        policy = get(k8s, "networking.k8s.io/v1/networkpolicies", "mq", "broker-a-network")
        assert policy["metadata"]["ownerReferences"][0]["uid"] == bg["metadata"]["uid"]

        await create(k8s, "secrets", "mq", _secret("team-acl", {"plain_acl.yml": ACL_TEXT}))
        await wait_for(
            lambda: condition(get(k8s, f"{G}/brokergroups", "mq", "broker-a"), "SecurityReady")["status"] == "True",
            what="SecurityReady=True once the Secret exists",
        )
        for ordinal in (0, 1):
            access = op.ctx.admin_access.for_url(f"fake://mq/broker-a/{ordinal}/api/v1/topics")
            assert access is not None and access.access_key is not None
            assert (access.access_key, access.secret_key) == ("ops-admin", "s3cret-admin")


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_acl_without_admin_and_tls_certificate_pending(k8s):
    async with running_operator(k8s) as op:
        await create(
            k8s, "secrets", "mq", _secret("no-admin", {"plain_acl.yml": "accounts: [{accessKey: a, secretKey: b}]"})
        )
        await create(
            k8s,
            "brokergroups",
            "mq",
            _bg(
                "broker-b", acl={"secretRef": {"name": "no-admin"}}, tls={"certManager": {"issuerRef": {"name": "ca"}}}
            ),
        )
        bg = await wait_for(
            lambda: (
                (o := get(k8s, f"{G}/brokergroups", "mq", "broker-b"))
                and (condition(o, "SecurityReady") or {}).get("status") == "False"
                and o
            ),
            what="SecurityReady=False",
        )
        message = condition(bg, "SecurityReady")["message"]
        assert "no admin account" in message and "waiting for cert-manager" in message
        cert = await wait_for(
            lambda: get(k8s, "cert-manager.io/v1/certificates", "mq", "broker-b-tls"), what="Certificate"
        )
        jsonschema.validate(
            {k: cert[k] for k in ("apiVersion", "kind", "spec")}
            | {"metadata": {"name": cert["metadata"]["name"], "namespace": "mq"}},
            CERTIFICATE_SCHEMA,
        )
        assert op.ctx.admin_access.for_url("fake://mq/broker-b/0/api/v1/topics") is None


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_network_policy_opt_out_opens_the_existing_policy(k8s):
    async with running_operator(k8s):
        await create(k8s, "nameserversets", "mq", nss_body("ns1", replicas=1))
        policy = await wait_for(
            lambda: get(k8s, "networking.k8s.io/v1/networkpolicies", "mq", "ns1-network"), what="policy"
        )
        assert len(policy["spec"]["ingress"]) == 2
        await patch(k8s, path("nameserversets", "mq", "ns1"), {"spec": {"networkPolicy": {"enabled": False}}})
        await wait_for(
            lambda: get(k8s, "networking.k8s.io/v1/networkpolicies", "mq", "ns1-network")["spec"]["ingress"] == [{}],
            what="the policy opened to all ingress",
        )


# --- real processes: the TLS settings the operator writes ---------------------------------------------


def _issue(directory: Path) -> dict[str, Path]:
    """tls.crt, tls.key and ca.crt as cert-manager writes them, for localhost and 127.0.0.1."""
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    files = {"tls.crt": directory / "tls.crt", "tls.key": directory / "tls.key", "ca.crt": directory / "ca.crt"}
    cert.cert_chain_pems[0].write_to_path(str(files["tls.crt"]))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(files["tls.crt"]), append=True)
    cert.private_key_pem.write_to_path(str(files["tls.key"]))
    ca.cert_pem.write_to_path(str(files["ca.crt"]))
    return files


def _relocate(values: list[str] | dict[str, Any], tls_dir: Path) -> Any:
    """The operator's settings with the mount path /etc/krocket-tls replaced by a local directory."""

    def move(v: Any) -> Any:
        return v.replace(build_tls.TLS_DIR, str(tls_dir)) if isinstance(v, str) else v

    if isinstance(values, dict):
        return {k: move(v) for k, v in values.items()}
    return [move(v) for v in values]


async def _grpc_serves_tls_only(endpoint: str, ca: Path) -> None:
    """The broker's gRPC port answers a 5.x client that trusts the cluster's CA and refuses a plaintext one."""
    import grpc

    from krocket.broker.grpc.protocol import definition_pb2 as pb
    from krocket.broker.grpc.protocol import service_pb2 as rpc
    from krocket.broker.grpc.protocol import service_pb2_grpc as rpc_grpc

    client = (("x-mq-client-id", "operator-test@1@1"), ("x-mq-language", "PYTHON"), ("x-mq-client-version", "5.1.2"))
    query = rpc.QueryRouteRequest(topic=pb.Resource(name="NoSuchTopic"))
    async with grpc.aio.secure_channel(endpoint, grpc.ssl_channel_credentials(ca.read_bytes())) as channel:
        route = await rpc_grpc.MessagingServiceStub(channel).QueryRoute(query, metadata=client, timeout=10)
    assert route.status.code == pb.TOPIC_NOT_FOUND, route.status
    async with grpc.aio.insecure_channel(endpoint) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await rpc_grpc.MessagingServiceStub(channel).QueryRoute(query, metadata=client, timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_operator_tls_settings_serve_https_and_the_operator_trusts_the_ca(tmp_path: Path):
    import ssl

    import aiohttp

    from krocket.operator.broker_admin import AdminAccess, BrokerAdmin, BrokerUnavailable, EndpointAccess

    from tests.operator.test_topic_real_broker import _spawn, _stop

    files = _issue(tmp_path / "tls")
    src = build_tls.TlsSource("x", False, "enforcing", True)
    grpc_port = free_port()
    ns_args = ["namesrv", "--host", "127.0.0.1", "--listen-port", "0", "--http-port", "0"]
    ns_proc, ns_ports = _spawn(
        [*ns_args, *_relocate(build_tls.namesrv_args(src), tmp_path / "tls")], tmp_path / "ns.json", tmp_path / "ns.log"
    )
    try:
        config = tmp_path / "broker.yaml"
        config.write_text(yaml.safe_dump(_relocate(build_tls.broker_config(src), tmp_path / "tls")))
        br_proc, br_ports = _spawn(
            [
                "broker", "--config", str(config),
                "--host", "127.0.0.1", "--listen-port", "0", "--http-port", "0", "--ha-port", "0",
                "--grpc-port", str(grpc_port),  # not the default 8081, which other tests' brokers may hold
                "--namesrv", f"127.0.0.1:{ns_ports['port']}",
                "--cluster", "c1", "--broker-name", "broker-a", "--broker-id", "0",
                "--store-dir", str(tmp_path / "store"), "--no-auto-create-topic",
            ],
            tmp_path / "br.json",
            tmp_path / "br.log",
        )  # fmt: skip
        try:
            base = f"https://127.0.0.1:{br_ports['http_port']}"
            access = AdminAccess()
            async with aiohttp.ClientSession() as session:
                admin = BrokerAdmin(session, access=access)
                with pytest.raises(BrokerUnavailable, match="(?i)certificate"):
                    await admin.broker_info(base)  # the system CAs do not know the cluster's CA
                trust = ssl.create_default_context(cadata=files["ca.crt"].read_text())
                access.set(base, EndpointAccess(ssl_context=trust))
                info = await admin.broker_info(base)
                assert info["brokerName"] == "broker-a"

                async def registered() -> bool:  # over TLS to the name server (tlsEnable, trusting ca.crt)
                    return bool((await admin.broker_info(base)).get("registered"))

                from tests.support.cluster import wait_until_async

                await wait_until_async(registered, timeout=20, message="the broker registered over TLS")
            await _grpc_serves_tls_only(f"127.0.0.1:{grpc_port}", files["ca.crt"])  # grpcTlsEnable
        finally:
            _stop(br_proc)
    finally:
        _stop(ns_proc)
