"""ACL wiring (pure): which Secret holds a resource's `plain_acl.yml`, how it is mounted and switched on, and the
Secrets the operator renders from `User` resources.

`spec.acl` on a BrokerGroup or NameServerSet is either
- `secretRef: {name, key}`: a Secret the user maintains (key defaults to `plain_acl.yml`), or
- `users: true`: the Secret the operator renders from every `User` of the cluster (`cluster_secret_name`); a
  NameServerSet names the cluster in `acl.clusterName` (name servers have no cluster of their own).

The Secret is mounted as a directory (never with subPath: the kubelet then swaps the file in place when the Secret
changes, and brokers and name servers re-read a changed ACL file within seconds).

The rendered Secret's first account is the operator's own admin account (`OPERATOR_ACCESS_KEY`, secret generated
once and kept): brokers sign their registrations with the first admin account of their ACL file, and the name
servers of the same cluster (mounting the same Secret) accept it; the operator signs its HTTP admin calls with it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from krocket.common.acl import parse_plain_acl
from krocket.operator.build_common import Manifest, common_labels, spec_of

ACL_DIR = "/etc/krocket-acl"
DEFAULT_KEY = "plain_acl.yml"
ACL_FILE = f"{ACL_DIR}/{DEFAULT_KEY}"
VOLUME = "acl"
OPERATOR_ACCESS_KEY = "krocket-operator"
OPERATOR_SECRET_KEY_FIELD = "operatorSecretKey"  # in the rendered Secret: the operator's admin secret, kept stable
COMPONENT_ACL = "acl"
DEFAULT_CLUSTER = "DefaultCluster"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class AclSource:
    """Where a resource's plain_acl.yml comes from."""

    secret_name: str
    key: str
    rendered: bool  # the operator renders this Secret from User resources
    cluster: str  # the cluster whose Users are rendered (rendered only)


def cluster_secret_name(cluster: str) -> str:
    """`<cluster>-acl` when the cluster name is a DNS label, else a lowercased form with a short hash (so `A_b`
    and `a-b` never share a Secret)."""
    if _DNS_LABEL.match(cluster) and len(cluster) <= 48:
        return f"{cluster}-acl"
    base = re.sub(r"[^a-z0-9-]", "-", cluster.lower()).strip("-")[:40] or "cluster"
    digest = hashlib.sha256(cluster.encode()).hexdigest()[:8]
    return f"{base}-{digest}-acl"


def source(body: Mapping[str, Any], cluster: str | None) -> AclSource | None:
    """The ACL of `body`, or None when the ACL is off. `cluster` is a BrokerGroup's clusterName (None for a
    NameServerSet, which takes `acl.clusterName`)."""
    acl = spec_of(body).get("acl") or {}
    ref = acl.get("secretRef") or {}
    if ref.get("name"):
        return AclSource(str(ref["name"]), str(ref.get("key") or DEFAULT_KEY), False, cluster or "")
    if acl.get("users"):
        name = cluster or str(acl.get("clusterName") or DEFAULT_CLUSTER)
        return AclSource(cluster_secret_name(name), DEFAULT_KEY, True, name)
    return None


def volume(src: AclSource) -> dict[str, Any]:
    return {
        "name": VOLUME,
        "secret": {
            "secretName": src.secret_name,
            "items": [{"key": src.key, "path": DEFAULT_KEY}],
            "defaultMode": 0o440,
        },
    }


def volume_mount() -> dict[str, Any]:
    return {"name": VOLUME, "mountPath": ACL_DIR, "readOnly": True}


def broker_config(src: AclSource | None) -> dict[str, Any]:
    """broker.yaml keys: the ACL on, pointing at the mounted file."""
    if src is None:
        return {}
    return {"aclEnable": True, "aclConfigFile": ACL_FILE}


def namesrv_args(src: AclSource | None) -> list[str]:
    return [] if src is None else ["--acl", ACL_FILE]


# --- the rendered ACL -------------------------------------------------------------------------------


def user_account(user: Mapping[str, Any], access_key: str, secret_key: str) -> dict[str, Any]:
    """One `accounts[]` entry of plain_acl.yml for a User resource."""
    spec = spec_of(user)
    account: dict[str, Any] = {"accessKey": access_key, "secretKey": secret_key, "admin": bool(spec.get("admin"))}
    if spec.get("whiteRemoteAddress"):
        account["whiteRemoteAddress"] = str(spec["whiteRemoteAddress"])
    account["defaultTopicPerm"] = str(spec.get("defaultTopicPerm") or "DENY")
    account["defaultGroupPerm"] = str(spec.get("defaultGroupPerm") or "DENY")
    account["topicPerms"] = [f"{p['name']}={p['perm']}" for p in spec.get("topicPerms") or []]
    account["groupPerms"] = [f"{p['name']}={p['perm']}" for p in spec.get("groupPerms") or []]
    return account


def render_plain_acl(operator_secret: str, accounts: Sequence[Mapping[str, Any]]) -> str:
    """plain_acl.yml with the operator's admin account first, then `accounts` sorted by accessKey; an account
    reusing the operator's or an earlier access key is left out (the caller reports it). Raises ConfigError
    when the result would not parse (it is checked with the broker's own parser)."""
    seen = {OPERATOR_ACCESS_KEY}
    rendered: list[dict[str, Any]] = [{"accessKey": OPERATOR_ACCESS_KEY, "secretKey": operator_secret, "admin": True}]
    for account in sorted(accounts, key=lambda a: str(a["accessKey"])):
        if account["accessKey"] in seen:
            continue
        seen.add(str(account["accessKey"]))
        rendered.append(dict(account))
    text = yaml.safe_dump({"globalWhiteRemoteAddresses": [], "accounts": rendered}, sort_keys=False)
    parse_plain_acl(yaml.safe_load(text), "rendered plain_acl.yml")
    return text


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret_text(secret: Mapping[str, Any] | None, key: str) -> str | None:
    """A Secret's value for `key` (from `data`, base64; or `stringData`), None when absent."""
    if not secret:
        return None
    raw = (secret.get("data") or {}).get(key)
    if raw is not None:
        try:
            return base64.b64decode(str(raw), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
    value = (secret.get("stringData") or {}).get(key)
    return None if value is None else str(value)


def cluster_secret(namespace: str, cluster: str, plain_acl: str, operator_secret: str) -> Manifest:
    """The rendered Secret of a cluster. No owner: every User of the cluster contributes to it, and deleting a User
    re-renders it. The operator's secret key is kept in it so that it stays the same across renders."""
    name = cluster_secret_name(cluster)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": common_labels(name, COMPONENT_ACL, cluster),
        },
        "data": {DEFAULT_KEY: b64(plain_acl), OPERATOR_SECRET_KEY_FIELD: b64(operator_secret)},
    }


def admin_credentials(plain_acl: str) -> tuple[str, str] | None:
    """The first admin account of a plain_acl.yml (what brokers sign their own traffic with, and what the operator
    uses for the HTTP admin API), None when it has none. Raises ConfigError when the file is invalid."""
    rules = parse_plain_acl(yaml.safe_load(plain_acl))
    admin = rules.first_admin
    return None if admin is None else (admin.access_key, admin.secret_key)
