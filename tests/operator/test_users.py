"""User resources: credentials Secrets, the cluster's rendered plain_acl.yml, and that a real broker runs with it.

Against kmock: generated keys are kept, the rendered file parses with the broker's own parser and carries the
operator's admin account first, conflicts and missing Secrets are conditions, deleting a User re-renders.
Against real processes: a name server and a broker with the rendered ACL accept the broker's registration (signed
with the operator's account), refuse the operator's admin calls without credentials, take them with
`AdminAccess`, and re-read the file when a User changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
import yaml

from krocket.common.acl import Perm, parse_plain_acl
from krocket.common.topic import TopicConfig
from krocket.operator import build_acl
from krocket.operator.broker_admin import AdminAccess, BrokerAdmin, BrokerRejected, EndpointAccess
from krocket.operator.reconcile_user import credentials_secret

from tests.operator.api import USERS, G, bg_body, post
from tests.operator.bodies import make_body
from tests.operator.kopf_harness import StampingEmulator, condition, get, running_operator, wait_for
from tests.support.cluster import start_cluster, wait_until_async

SECRETS = "v1/secrets"

kmock_marks = [pytest.mark.kmock(cls=StampingEmulator), pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def user_body(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": G, "kind": "User", "metadata": {"name": name}, "spec": {"clusterName": "c1", **spec}}


def _rendered(k, cluster_secret: str = "c1-acl") -> dict[str, Any]:
    secret = get(k, SECRETS, "mq", cluster_secret)
    return yaml.safe_load(build_acl.secret_text(secret, "plain_acl.yml") or "")


def _keys(k, name: str) -> tuple[str | None, str | None]:
    secret = get(k, SECRETS, "mq", f"{name}-credentials")
    return build_acl.secret_text(secret, "accessKey"), build_acl.secret_text(secret, "secretKey")


# --- pure ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.30", "1.32"])
def test_rendered_secrets_validate_and_parse(version):
    user = make_body(
        "User",
        "orders",
        {
            "clusterName": "c1",
            "topicPerms": [{"name": "Orders", "perm": "PUB|SUB"}, {"name": "Audit", "perm": "SUB"}],
            "groupPerms": [{"name": "order-consumers", "perm": "SUB"}],
            "defaultTopicPerm": "DENY",
            "whiteRemoteAddress": "10.1.2.*",
        },
    )
    account = build_acl.user_account(user, "orders-key", "orders-secret")
    text = build_acl.render_plain_acl("op-secret", [account])
    rules = parse_plain_acl(yaml.safe_load(text))
    assert rules.first_admin is not None and rules.first_admin.access_key == build_acl.OPERATOR_ACCESS_KEY
    orders = rules.account("orders-key")
    assert orders is not None and not orders.admin
    assert orders.topic_perm("Orders") == Perm.PUB | Perm.SUB and orders.topic_perm("Audit") == Perm.SUB
    assert orders.topic_perm("Other") == Perm.DENY and orders.group_perm("order-consumers") == Perm.SUB
    assert orders.is_white_listed("10.1.2.9")
    cluster_secret = build_acl.cluster_secret("mq", "c1", text, "op-secret")
    kubernetes_validate.validate(cluster_secret, version, strict=True)
    creds = credentials_secret(user, "orders-key", "orders-secret")
    kubernetes_validate.validate(creds, version, strict=True)
    assert creds["metadata"]["ownerReferences"][0]["kind"] == "User"  # deleting the User removes it
    assert build_acl.secret_text(creds, "secretKey") == "orders-secret"


def test_cluster_secret_names_are_valid_and_distinct():
    assert build_acl.cluster_secret_name("c1") == "c1-acl"
    odd = {build_acl.cluster_secret_name(n) for n in ("DefaultCluster", "A_b", "a-b", "a_b")}
    assert len(odd) == 4
    assert all(len(n) <= 63 and n == n.lower() and "_" not in n for n in odd)


# --- against the emulated API server ------------------------------------------------------------------


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_user_gets_generated_keys_kept_and_rendered(k8s):
    async with running_operator(k8s):
        perms = {"topicPerms": [{"name": "Orders", "perm": "PUB"}], "defaultGroupPerm": "SUB"}
        await post(k8s, f"/apis/{G}/namespaces/mq/users", user_body("orders-app", **perms))
        user = await wait_for(
            lambda: (u := get(k8s, USERS, "mq", "orders-app")) and (condition(u) or {}).get("status") == "True" and u,
            what="User Ready",
        )
        access_key, secret_key = _keys(k8s, "orders-app")
        assert access_key == user["status"]["accessKey"] and access_key.startswith("orders-app-")
        assert secret_key and len(secret_key) >= 24
        assert user["status"]["credentialsSecret"] == "orders-app-credentials"
        assert user["status"]["aclSecret"] == "c1-acl"
        creds = get(k8s, SECRETS, "mq", "orders-app-credentials")
        assert creds["metadata"]["ownerReferences"][0]["uid"] == user["metadata"]["uid"]

        rendered = _rendered(k8s)
        accounts = {a["accessKey"]: a for a in rendered["accounts"]}
        assert rendered["accounts"][0]["accessKey"] == build_acl.OPERATOR_ACCESS_KEY
        assert rendered["accounts"][0]["admin"] is True
        assert accounts[access_key]["secretKey"] == secret_key
        assert (
            accounts[access_key]["topicPerms"] == ["Orders=PUB"] and accounts[access_key]["defaultGroupPerm"] == "SUB"
        )
        operator_secret = rendered["accounts"][0]["secretKey"]

        # a second User: the first one's keys and the operator's secret stay as they are
        await post(k8s, f"/apis/{G}/namespaces/mq/users", user_body("audit", accessKey="audit-key", admin=True))
        await wait_for(lambda: "audit-key" in {a["accessKey"] for a in _rendered(k8s)["accounts"]}, what="2nd user")
        assert _keys(k8s, "orders-app") == (access_key, secret_key)
        again = _rendered(k8s)
        assert again["accounts"][0]["secretKey"] == operator_secret
        assert parse_plain_acl(again).account("audit-key").admin


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_conflicting_access_key_and_missing_secret_ref_are_conditions(k8s):
    async with running_operator(k8s):
        await post(k8s, f"/apis/{G}/namespaces/mq/users", user_body("first", accessKey="shared"))
        await wait_for(lambda: (condition(get(k8s, USERS, "mq", "first")) or {}).get("status") == "True", what="first")
        await post(k8s, f"/apis/{G}/namespaces/mq/users", user_body("second", accessKey="shared"))
        second = await wait_for(
            lambda: (
                (u := get(k8s, USERS, "mq", "second"))
                and (condition(u) or {}).get("reason") == "AccessKeyConflict"
                and u
            ),
            what="AccessKeyConflict",
        )
        assert "first" in condition(second)["message"]
        assert [a["accessKey"] for a in _rendered(k8s)["accounts"]].count("shared") == 1

        await post(
            k8s,
            f"/apis/{G}/namespaces/mq/users",
            user_body("byo", accessKey="byo-key", secretRef={"name": "byo-secret"}),
        )
        await wait_for(
            lambda: (condition(get(k8s, USERS, "mq", "byo")) or {}).get("reason") == "SecretNotFound",
            what="SecretNotFound",
        )
        assert "byo-key" not in {a["accessKey"] for a in _rendered(k8s)["accounts"]}
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "byo-secret"},
            "data": {"secretKey": build_acl.b64("mine")},
        }
        await post(k8s, "/api/v1/namespaces/mq/secrets", secret)
        await wait_for(
            lambda: {a["accessKey"]: a["secretKey"] for a in _rendered(k8s)["accounts"]}.get("byo-key") == "mine",
            timeout=20,
            what="the user's own secret rendered (retry after SecretNotFound)",
        )
        # the credentials Secret names the access key only (the secret key stays in the user's own Secret)
        await wait_for(lambda: _keys(k8s, "byo") == ("byo-key", None), what="byo-credentials")
        await wait_for(lambda: (condition(get(k8s, USERS, "mq", "byo")) or {}).get("status") == "True", what="Ready")


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_deleting_a_user_removes_its_account(k8s):
    async with running_operator(k8s):
        await post(k8s, f"/apis/{G}/namespaces/mq/users", user_body("temp", accessKey="temp-key"))
        await wait_for(lambda: "temp-key" in {a["accessKey"] for a in _rendered(k8s)["accounts"]}, what="rendered")
        resp = await k8s.delete(f"/apis/{G}/namespaces/mq/users/temp")
        assert resp.status < 300
        await wait_for(
            lambda: [a["accessKey"] for a in _rendered(k8s)["accounts"]] == [build_acl.OPERATOR_ACCESS_KEY],
            what="the account removed from the rendered ACL",
        )


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_brokergroup_with_users_mounts_the_rendered_secret_and_signs_with_the_operator(k8s):
    async with running_operator(k8s) as op:
        body = bg_body("broker-a", storage={"ephemeral": True}, acl={"users": True})
        await post(k8s, f"/apis/{G}/namespaces/mq/brokergroups", body)
        await wait_for(
            lambda: (
                (condition(get(k8s, f"{G}/brokergroups", "mq", "broker-a"), "SecurityReady") or {}).get("status")
                == "True"
            ),
            what="SecurityReady with no User yet (the rendered Secret holds the operator's account)",
        )
        sts = get(k8s, "apps/v1/statefulsets", "mq", "broker-a")
        volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
        assert volumes["acl"]["secret"]["secretName"] == "c1-acl"
        operator_secret = _rendered(k8s)["accounts"][0]["secretKey"]
        access = op.ctx.admin_access.for_url("fake://mq/broker-a/0/api/v1/topics")
        assert access is not None and access.access_key is not None
        assert (access.access_key, access.secret_key) == (build_acl.OPERATOR_ACCESS_KEY, operator_secret)


# --- real processes -----------------------------------------------------------------------------------


async def test_real_broker_runs_with_the_rendered_acl_and_rereads_it(tmp_path: Path):
    user = make_body("User", "app", {"clusterName": "DefaultCluster", "topicPerms": [{"name": "T1", "perm": "PUB"}]})
    acl_file = tmp_path / "plain_acl.yml"
    acl_file.write_text(build_acl.render_plain_acl("op-secret", [build_acl.user_account(user, "app", "app-secret")]))
    # start_cluster waits until the broker is registered: the name server checked the operator account's signature
    cluster = start_cluster(tmp_path / "cluster", namesrvs=1, groups=1, acl_file=acl_file, auto_create=False)
    try:
        base = f"http://127.0.0.1:{cluster.brokers[0].http_port}"
        access = AdminAccess()
        async with aiohttp.ClientSession() as session:
            admin = BrokerAdmin(session, access=access)
            with pytest.raises(BrokerRejected, match="401"):
                await admin.upsert_topic(base, TopicConfig("T1", 2, 2, 6))
            access.set(base, EndpointAccess(access_key="app", secret_key="app-secret"))
            with pytest.raises(BrokerRejected, match="403"):  # not an admin
                await admin.upsert_topic(base, TopicConfig("T1", 2, 2, 6))
            access.set(base, EndpointAccess(access_key=build_acl.OPERATOR_ACCESS_KEY, secret_key="op-secret"))
            assert (await admin.upsert_topic(base, TopicConfig("T1", 2, 2, 6)))["topicName"] == "T1"

            # the User becomes an admin: re-rendered file, re-read by the running broker
            promoted = make_body("User", "app", {"admin": True})
            acl_file.write_text(
                build_acl.render_plain_acl("op-secret", [build_acl.user_account(promoted, "app", "app-secret")])
            )
            access.set(base, EndpointAccess(access_key="app", secret_key="app-secret"))

            async def app_may_create() -> bool:
                try:
                    await admin.upsert_topic(base, TopicConfig("T2", 1, 1, 6))
                except BrokerRejected:
                    return False
                return True

            await wait_until_async(app_may_create, timeout=15, message="the broker re-read the ACL file")
    finally:
        cluster.stop()
