"""User resources: each User's credentials Secret, and the cluster's rendered `plain_acl.yml` Secret.

A User (krocket.io/v1alpha1) is one account of one cluster's ACL. Its access key is `spec.accessKey`, or generated
once and kept (in `status.accessKey` and in the credentials Secret); its secret key is read from `spec.secretRef`
or generated once into the Secret `<user>-credentials` (keys accessKey, secretKey; owned by the User, so deleting
the User removes it). Every User of a cluster is rendered into the cluster's Secret (`build_acl.cluster_secret_name`)
that BrokerGroups and NameServerSets with `spec.acl.users: true` mount.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from krocket.common.acl import parse_plain_acl
from krocket.common.errors import ConfigError
from krocket.operator import build_acl
from krocket.operator import conditions as cond
from krocket.operator import constants as c
from krocket.operator.apply import OwnershipConflict, apply
from krocket.operator.build_common import Manifest, child_metadata, common_labels, meta, spec_of
from krocket.operator.context import OperatorConfig, OperatorContext
from krocket.operator.kopf_glue import context_of, register_reconciler
from krocket.operator.kube import SECRETS, USERS, ApiError, KubeClient
from krocket.operator.metrics import observed
from krocket.operator.outcome import Event, Outcome

log = logging.getLogger(__name__)

COMPONENT_USER = "user"
ACCESS_KEY_FIELD = "accessKey"
SECRET_KEY_FIELD = "secretKey"

REASON_SECRET_NOT_FOUND = "SecretNotFound"
REASON_ACCESS_KEY_CONFLICT = "AccessKeyConflict"
REASON_RENDERED = "Rendered"


def credentials_secret_name(user: str) -> str:
    return f"{user}-credentials"


def cluster_of(user: Mapping[str, Any]) -> str:
    return str(spec_of(user).get("clusterName") or build_acl.DEFAULT_CLUSTER)


def generated_access_key(user: Mapping[str, Any]) -> str:
    return f"{meta(user)['name']}-{secrets.token_hex(4)}"


def credentials_secret(user: Mapping[str, Any], access_key: str, secret_key: str | None) -> Manifest:
    """`<user>-credentials` for applications; `secret_key` None (spec.secretRef): the access key only."""
    name = meta(user)["name"]
    data = {ACCESS_KEY_FIELD: access_key}
    if secret_key is not None:
        data[SECRET_KEY_FIELD] = secret_key
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": child_metadata(
            user, credentials_secret_name(name), common_labels(name, COMPONENT_USER, cluster_of(user))
        ),
        "data": {k: build_acl.b64(v) for k, v in data.items()},
    }


@dataclass
class UserKeys:
    access_key: str | None
    secret_key: str | None
    problem: tuple[str, str] | None = None  # (reason, message) when the keys cannot be had


async def read_keys(kube: KubeClient, user: Mapping[str, Any]) -> UserKeys:
    """The User's keys as they stand (nothing generated): spec/status/credentials Secret for the access key,
    spec.secretRef or the credentials Secret for the secret key."""
    ns, name, spec = meta(user)["namespace"], meta(user)["name"], spec_of(user)
    creds = await kube.get(SECRETS, ns, credentials_secret_name(name))
    access_key = (
        spec.get("accessKey")
        or (user.get("status") or {}).get("accessKey")
        or build_acl.secret_text(creds, ACCESS_KEY_FIELD)
    )
    ref = spec.get("secretRef") or {}
    if ref.get("name"):
        key = str(ref.get("key") or SECRET_KEY_FIELD)
        secret_key = build_acl.secret_text(await kube.get(SECRETS, ns, str(ref["name"])), key)
        if not secret_key:
            message = f"Secret {ref['name']!r} with key {key!r} not found: create it, or drop spec.secretRef"
            return UserKeys(access_key, None, (REASON_SECRET_NOT_FOUND, message))
        return UserKeys(access_key, secret_key)
    return UserKeys(access_key, build_acl.secret_text(creds, SECRET_KEY_FIELD))


def _is_live(user: Mapping[str, Any]) -> bool:
    return not meta(user).get("deletionTimestamp")


@dataclass
class Rendered:
    secret_name: str
    included: list[str] = field(default_factory=list)  # User names in the rendered file
    conflicts: dict[str, str] = field(default_factory=dict)  # User name -> the User that holds its access key
    invalid: dict[str, str] = field(default_factory=dict)  # User name -> why its account is refused


async def render_cluster_acl(kube: KubeClient, namespace: str, cluster: str) -> Rendered:
    """Render every live User of `cluster` in `namespace` into the cluster's ACL Secret (created when missing).

    Users are taken oldest first: a later User reusing an access key is left out and reported as a conflict.
    Users whose keys are not there yet are skipped (their own reconcile renders again)."""
    users = [u for u in await kube.list(USERS, namespace) if cluster_of(u) == cluster and _is_live(u)]
    users.sort(key=lambda u: (str(meta(u).get("creationTimestamp") or ""), meta(u)["name"]))
    holders: dict[str, str] = {build_acl.OPERATOR_ACCESS_KEY: "the operator"}
    rendered = Rendered(build_acl.cluster_secret_name(cluster))
    accounts: list[dict[str, Any]] = []
    for user in users:
        keys = await read_keys(kube, user)
        if not keys.access_key or not keys.secret_key:
            continue
        holder = holders.get(keys.access_key)
        if holder is not None:
            rendered.conflicts[meta(user)["name"]] = holder
            continue
        account = build_acl.user_account(user, keys.access_key, keys.secret_key)
        try:
            parse_plain_acl({"accounts": [account]}, f"User {meta(user)['name']}")
        except ConfigError as e:
            rendered.invalid[meta(user)["name"]] = e.message
            continue
        holders[keys.access_key] = meta(user)["name"]
        accounts.append(account)
        rendered.included.append(meta(user)["name"])
    live = await kube.get(SECRETS, namespace, rendered.secret_name)
    operator_secret = build_acl.secret_text(live, build_acl.OPERATOR_SECRET_KEY_FIELD) or secrets.token_urlsafe(24)
    text = build_acl.render_plain_acl(operator_secret, accounts)
    await apply(kube, build_acl.cluster_secret(namespace, cluster, text, operator_secret))
    return rendered


async def reconcile_user(body: Mapping[str, Any], ctx: OperatorContext) -> Outcome:
    kube = ctx.started_kube()
    ns, name, spec = meta(body)["namespace"], meta(body)["name"], spec_of(body)
    out = Outcome()
    cluster = cluster_of(body)
    keys = await read_keys(kube, body)
    access_key = keys.access_key or generated_access_key(body)
    status: dict[str, Any] = {"accessKey": access_key, "clusterName": cluster}
    if keys.problem is None:
        own_secret = None if (spec.get("secretRef") or {}).get("name") else keys.secret_key or secrets.token_urlsafe(24)
        try:
            await apply(kube, credentials_secret(body, access_key, own_secret))
        except OwnershipConflict as e:
            keys.problem = (cond.REASON_CONFLICT, str(e))
        status["credentialsSecret"] = credentials_secret_name(name)
    previous = (body.get("status") or {}).get("clusterName")
    if previous and previous != cluster:
        await render_cluster_acl(kube, ns, str(previous))  # the account leaves its old cluster
    rendered = await render_cluster_acl(kube, ns, cluster)
    status["aclSecret"] = rendered.secret_name
    if keys.problem is not None:
        ready = cond.Condition(cond.READY, cond.FALSE, keys.problem[0], keys.problem[1])
        out.events.append(Event("Warning", keys.problem[0], keys.problem[1]))
    elif name in rendered.invalid:
        ready = cond.Condition(cond.READY, cond.FALSE, cond.REASON_INVALID, rendered.invalid[name])
        out.events.append(Event("Warning", cond.REASON_INVALID, rendered.invalid[name]))
    elif name in rendered.conflicts:
        message = (
            f"access key {access_key!r} is already used by {rendered.conflicts[name]} in cluster {cluster!r}; "
            "set another spec.accessKey"
        )
        ready = cond.Condition(cond.READY, cond.FALSE, REASON_ACCESS_KEY_CONFLICT, message)
        out.events.append(Event("Warning", REASON_ACCESS_KEY_CONFLICT, message))
    elif name in rendered.included:
        ready = cond.Condition(
            cond.READY, cond.TRUE, REASON_RENDERED, f"account {access_key!r} is in Secret {rendered.secret_name}"
        )
    else:
        ready = cond.Condition(cond.READY, cond.FALSE, cond.REASON_WAITING, "credentials not rendered yet")
        out.retry_after = ctx.config.retry_base_delay
        out.retry_message = "credentials not rendered yet"
    out.status = cond.status_with_conditions(body, status, [ready])
    return out


async def delete_user(body: Mapping[str, Any], ctx: OperatorContext) -> None:
    """Re-render the cluster without the User (its credentials Secret goes with it by garbage collection)."""
    kube = ctx.started_kube()
    await render_cluster_acl(kube, meta(body)["namespace"], cluster_of(body))


def register_users(registry: kopf.OperatorRegistry, cfg: OperatorConfig) -> None:
    counted = observed(c.KIND_USER)(reconcile_user)

    async def reconcile(body: Mapping[str, Any], ctx: OperatorContext, _retry: int) -> Outcome:
        return await counted(body, ctx)

    # the timer repairs a rendered Secret edited or deleted out of band, and renders that raced
    register_reconciler(registry, c.USERS, "user", reconcile, cfg.resync_interval)
    g, v = c.GROUP, c.VERSION

    @kopf.on.delete(g, v, c.USERS, id="user_delete", registry=registry)
    async def user_delete(body: kopf.Body, memo: Any, **_: Any) -> None:
        try:
            await delete_user(body, context_of(memo))
        except ApiError as e:
            raise kopf.TemporaryError(f"re-rendering the ACL without this user failed: {e}", delay=5) from e
