"""A small async Kubernetes REST client over aiohttp, for the objects the operator owns.

kopf watches and patches the custom resources itself; this client creates and patches their children.
It works on plain dicts (what the builders return) and only uses merge patches, which every API server
(and the test emulator) supports.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from krocket.operator import constants as c

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Kind:
    api_version: str
    plural: str
    kind: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name)}"
        if subresource:
            base += f"/{subresource}"
        return base


STATEFULSETS = Kind("apps/v1", "statefulsets", "StatefulSet")
SERVICES = Kind("v1", "services", "Service")
CONFIGMAPS = Kind("v1", "configmaps", "ConfigMap")
PVCS = Kind("v1", "persistentvolumeclaims", "PersistentVolumeClaim")
PODS = Kind("v1", "pods", "Pod")
PDBS = Kind("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget")
NAMESERVERSETS = Kind(c.API_VERSION, c.NAMESERVERSETS, c.KIND_NAMESERVERSET)
BROKERGROUPS = Kind(c.API_VERSION, c.BROKERGROUPS, c.KIND_BROKERGROUP)
TOPICS = Kind(c.API_VERSION, c.TOPICS, c.KIND_TOPIC)
SECRETS = Kind("v1", "secrets", "Secret")
NETWORKPOLICIES = Kind("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy")
CERTIFICATES = Kind("cert-manager.io/v1", "certificates", "Certificate")
USERS = Kind(c.API_VERSION, c.USERS, c.KIND_USER)
CONSUMERGROUPS = Kind(c.API_VERSION, c.CONSUMERGROUPS, c.KIND_CONSUMERGROUP)
DEPLOYMENTS = Kind("apps/v1", "deployments", "Deployment")
REPLICASETS = Kind("apps/v1", "replicasets", "ReplicaSet")
# Workloads with a scale subresource, known without asking the API server's discovery.
_SCALABLE = {(k.api_version, k.kind): k for k in (DEPLOYMENTS, STATEFULSETS, REPLICASETS)}

_BY_KIND = {
    (k.api_version, k.kind): k
    for k in (STATEFULSETS, SERVICES, CONFIGMAPS, PVCS, PODS, PDBS, SECRETS, NETWORKPOLICIES, CERTIFICATES)
}


def kind_of(manifest: Mapping[str, Any]) -> Kind:
    return _BY_KIND[(manifest["apiVersion"], manifest["kind"])]


class ApiError(Exception):
    """An error answer of the API server; `reason` and `api_message` come from its `Status` body when it sent one."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.reason, self.api_message = _status_reason(status, message)
        super().__init__(f"{status}: {self.api_message[:500]}")


_REASON_BY_CODE = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 409: "Conflict", 422: "Invalid"}


def _status_reason(code: int, text: str) -> tuple[str, str]:
    """(reason, message) from a `metav1.Status` JSON body; a reason from the HTTP code when the body is not one."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind", "Status") == "Status":
        reason = str(body.get("reason") or _REASON_BY_CODE.get(code, "ApiError"))
        return reason, str(body.get("message") or text)
    return _REASON_BY_CODE.get(code, "InternalError" if code >= 500 else "ApiError"), text


@dataclass(frozen=True)
class Credentials:
    """Where and how to reach the API server; `token_path` is re-read on every request (bound tokens rotate)."""

    server: str
    token: str | None = None
    token_path: str | None = None
    ca_path: str | None = None
    ca_data: bytes | None = None
    client_cert_path: str | None = None
    client_key_path: str | None = None
    insecure: bool = False

    @classmethod
    def in_cluster(cls) -> Credentials | None:
        token = SERVICE_ACCOUNT_DIR / "token"
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        if not (token.exists() and host and port):
            return None
        host = f"[{host}]" if ":" in host else host
        return cls(server=f"https://{host}:{port}", token_path=str(token), ca_path=str(SERVICE_ACCOUNT_DIR / "ca.crt"))

    @classmethod
    def from_kopf(cls, info: Any) -> Credentials:
        """From a `kopf.ConnectionInfo` (e.g. `kopf.login_with_kubeconfig()`)."""
        cert_path, key_path = info.certificate_path, info.private_key_path
        if info.certificate_data and info.private_key_data:
            cert_path = _tempfile(info.certificate_data)
            key_path = _tempfile(info.private_key_data)
        return cls(
            server=info.server,
            token=info.token,
            ca_path=info.ca_path,
            ca_data=info.ca_data,
            client_cert_path=cert_path,
            client_key_path=key_path,
            insecure=bool(info.insecure),
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            return False
        ctx = ssl.create_default_context(cafile=self.ca_path)
        if self.ca_data:
            data = self.ca_data
            try:
                data = base64.b64decode(data, validate=True)
            except ValueError:
                pass
            ctx.load_verify_locations(cadata=data.decode())
        if self.client_cert_path:
            ctx.load_cert_chain(self.client_cert_path, self.client_key_path)
        return ctx

    def headers(self) -> dict[str, str]:
        token = self.token
        if self.token_path:
            token = Path(self.token_path).read_text().strip()
        return {"Authorization": f"Bearer {token}"} if token else {}


def _tempfile(data: bytes) -> str:
    try:
        data = base64.b64decode(data, validate=True)
    except ValueError:
        pass
    f = tempfile.NamedTemporaryFile(delete=False, suffix=".pem")  # noqa: SIM115 - lives as long as the process
    f.write(data)
    f.close()
    return f.name


class KubeClient:
    def __init__(self, creds: Credentials, *, timeout: float = 30.0) -> None:
        self._creds = creds
        self._session = aiohttp.ClientSession(
            base_url=creds.server.rstrip("/") + "/",
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(ssl=creds.ssl_context()),
        )

    async def close(self) -> None:
        await self._session.close()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**self._creds.headers(), **kwargs.pop("headers", {})}
        async with self._session.request(method, path.lstrip("/"), headers=headers, **kwargs) as resp:
            if resp.status == 404:
                return None
            if resp.status >= 400:
                text = await resp.text()
                raise ApiError(resp.status, text)
            return await resp.json(content_type=None)

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._request("GET", kind.path(namespace, name))

    async def list(
        self, kind: Kind, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        params = {}
        if labels:
            params["labelSelector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        data = await self._request("GET", kind.path(namespace), params=params)
        items = list((data or {}).get("items") or [])
        if labels:  # filter again: not every server (e.g. the test emulator) honours labelSelector
            items = [i for i in items if _has_labels(i, labels)]
        if namespace:
            items = [i for i in items if (i.get("metadata") or {}).get("namespace") in (None, namespace)]
        return items

    async def create(self, kind: Kind, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._request("POST", kind.path(namespace), json=dict(body))

    async def patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any] | None:
        return await self._request(
            "PATCH",
            kind.path(namespace, name, subresource),
            json=dict(body),
            headers={"Content-Type": MERGE_PATCH},
        )

    async def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        return await self._request("DELETE", kind.path(namespace, name)) is not None

    async def scalable_kind(self, api_version: str, kind: str) -> Kind | None:
        """The resource of a `scaleTargetRef` (apiVersion + kind) that has a scale subresource: the apps/v1
        workloads directly, anything else (a custom resource) through discovery; None when there is none."""
        known = _SCALABLE.get((api_version, kind))
        if known is not None:
            return known
        prefix = "/api/" if "/" not in api_version else "/apis/"
        listing = await self._request("GET", f"{prefix}{api_version}")
        names = {r.get("name") for r in (listing or {}).get("resources") or []}
        for res in (listing or {}).get("resources") or []:
            plural = str(res.get("name", ""))
            if res.get("kind") == kind and "/" not in plural and f"{plural}/scale" in names:
                return Kind(api_version, plural, kind, bool(res.get("namespaced", True)))
        return None

    async def get_scale(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """The target's `autoscaling/v1` Scale (`spec.replicas`, `status.replicas`); None when it does not exist."""
        return await self._request("GET", kind.path(namespace, name, "scale"))

    async def set_scale(self, kind: Kind, namespace: str, name: str, replicas: int) -> dict[str, Any] | None:
        """Set the target's replicas through its scale subresource (what `kubectl scale` and the HPA do)."""
        return await self.patch(kind, namespace, name, {"spec": {"replicas": replicas}}, "scale")


def _has_labels(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())
