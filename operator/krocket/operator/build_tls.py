"""TLS wiring (pure): the certificate Secret of a BrokerGroup or NameServerSet, the cert-manager Certificate the
operator creates for it, how it is mounted, and the broker/name server settings that switch TLS on.

`spec.tls` is either
- `certManager: {issuerRef: {name, kind, group}}`: the operator creates a cert-manager `Certificate` named
  `<name>-tls` that writes the Secret `<name>-tls` (tls.crt, tls.key, ca.crt), for every pod DNS name (wildcard
  under the headless Service) and the Services' names; or
- `secretRef: {name}`: a `kubernetes.io/tls` Secret the user maintains (tls.crt, tls.key and ca.crt).

Remoting (and a broker's HA port) serve in `mode` (enforcing: TLS only, the default; permissive: TLS and plain on
one port, for a migration); the broker's own connections out (name servers, its master) use TLS trusting ca.crt;
the HTTP port serves HTTPS (`http: false` keeps it plain) and the probes switch to HTTPS; a broker's gRPC port
(RocketMQ 5.x SDKs) serves TLS only with the same certificate (`grpc: false` keeps it plain; gRPC has no permissive
mode, so a migration keeps it plain until the 5.x clients have TLS on).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from krocket.operator.build_common import Manifest, child_metadata, common_labels, meta, spec_of

TLS_DIR = "/etc/krocket-tls"
VOLUME = "tls"
CERT_FILE = f"{TLS_DIR}/tls.crt"
KEY_FILE = f"{TLS_DIR}/tls.key"
CA_FILE = f"{TLS_DIR}/ca.crt"
CA_KEY = "ca.crt"
CERT_MANAGER_API = "cert-manager.io/v1"
MODES = ("enforcing", "permissive")


@dataclass(frozen=True)
class TlsSource:
    secret_name: str
    cert_manager: bool
    mode: str
    http: bool
    grpc: bool = True  # a broker's gRPC port serves TLS (BrokerGroup only)


def certificate_name(name: str) -> str:
    return f"{name}-tls"


def source(body: Mapping[str, Any]) -> TlsSource | None:
    tls = spec_of(body).get("tls") or {}
    mode = str(tls.get("mode") or "enforcing")
    http, grpc = bool(tls.get("http", True)), bool(tls.get("grpc", True))
    if (tls.get("secretRef") or {}).get("name"):
        return TlsSource(str(tls["secretRef"]["name"]), False, mode, http, grpc)
    if tls.get("certManager"):
        return TlsSource(certificate_name(meta(body)["name"]), True, mode, http, grpc)
    return None


def https(body: Mapping[str, Any]) -> bool:
    """Whether the HTTP port (probes, metrics, the admin API) serves HTTPS."""
    src = source(body)
    return src is not None and src.http


def volume(src: TlsSource) -> dict[str, Any]:
    return {"name": VOLUME, "secret": {"secretName": src.secret_name, "defaultMode": 0o440}}


def volume_mount() -> dict[str, Any]:
    return {"name": VOLUME, "mountPath": TLS_DIR, "readOnly": True}


def broker_config(src: TlsSource | None) -> dict[str, Any]:
    """broker.yaml keys (krocket.broker.config, RocketMQ's names)."""
    if src is None:
        return {}
    return {
        "tlsMode": src.mode,
        "tlsServerCertPath": CERT_FILE,
        "tlsServerKeyPath": KEY_FILE,
        "tlsEnable": True,
        "tlsClientTrustCertPath": CA_FILE,
        "httpTlsEnable": src.http,
        "grpcTlsEnable": src.grpc,
    }


def namesrv_args(src: TlsSource | None) -> list[str]:
    """The name server's command-line TLS options (krocket.namesrv.command)."""
    if src is None:
        return []
    args = ["--tls-mode", src.mode, "--tls-cert", CERT_FILE, "--tls-key", KEY_FILE]
    return [*args, "--http-tls"] if src.http else args


def dns_names(namespace: str, services: list[str], headless: str) -> list[str]:
    """Every name a client may use: each Service (short, namespaced, .svc, cluster.local) and each pod under the
    headless Service (a wildcard, so scaling never needs a new certificate)."""
    names: list[str] = []
    for svc in services:
        names += [svc, f"{svc}.{namespace}", f"{svc}.{namespace}.svc", f"{svc}.{namespace}.svc.cluster.local"]
    names += [f"*.{headless}.{namespace}.svc", f"*.{headless}.{namespace}.svc.cluster.local"]
    return list(dict.fromkeys(names))


def certificate(
    body: Mapping[str, Any], component: str, services: list[str], headless: str, cluster: str | None = None
) -> Manifest | None:
    """The cert-manager Certificate of `body`, None unless `spec.tls.certManager` is set."""
    src = source(body)
    if src is None or not src.cert_manager:
        return None
    name, ns = meta(body)["name"], meta(body)["namespace"]
    issuer = dict((spec_of(body).get("tls") or {}).get("certManager", {}).get("issuerRef") or {})
    issuer_ref: dict[str, Any] = {"name": str(issuer.get("name", "")), "kind": str(issuer.get("kind") or "Issuer")}
    issuer_ref["group"] = str(issuer.get("group") or "cert-manager.io")
    return {
        "apiVersion": CERT_MANAGER_API,
        "kind": "Certificate",
        "metadata": child_metadata(body, certificate_name(name), common_labels(name, component, cluster)),
        "spec": {
            "secretName": src.secret_name,
            "commonName": f"{headless}.{ns}.svc",
            "dnsNames": dns_names(ns, services, headless),
            "usages": ["server auth", "client auth", "digital signature", "key encipherment"],
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "issuerRef": issuer_ref,
        },
    }


def set_probe_scheme(container: dict[str, Any], body: Mapping[str, Any]) -> None:
    """Switch the container's httpGet probes to HTTPS when the HTTP port serves it (left untouched otherwise, so
    a group without TLS keeps its template, and its pods, as they are)."""
    if not https(body):
        return
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = (container.get(probe) or {}).get("httpGet")
        if isinstance(get, dict):
            get["scheme"] = "HTTPS"
