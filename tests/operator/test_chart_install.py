"""The chart installed, upgraded and uninstalled by Helm itself (helm-python-sdk: Helm's Go SDK, server-side apply,
hooks, kubeVersion check) against kmock's emulator, with the operator running in kopf next to it:

- `helm upgrade` upgrades the CRDs (they are templates) and `helm uninstall` keeps them (resource-policy keep);
- an API server older than the chart's kubeVersion is refused;
- `helm uninstall` with the example cluster: the pre-delete hook runs while the operator still runs, so the
  Topic's finalizer is released and nothing is left Terminating (the Job's work is done here by the module the
  Job runs, krocket.operator.release_cleanup, since the emulator runs no pods).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import attrs
import kmock
import pytest
import yaml

from krocket.operator.kube import Credentials, KubeClient
from krocket.operator.release_cleanup import CleanupTimeout, remove_release_resources

from tests.operator.kopf_harness import (
    FakeBrokers,
    GaplessWatchEmulator,
    StampingEmulator,
    api_version_of,
    condition,
    declare_resources,
    get,
    kind_of_resource,
    running_operator,
    wait_for,
)

helm = pytest.importorskip("helm_python", reason="helm-python-sdk==0.2.2 not installed (dev extra)")

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "krocket"
NS = "mq-system"
CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"
JOBS = "batch/v1/jobs"
DEPLOYMENTS = "apps/v1/deployments"
G = "krocket.io/v1alpha1"
# An OpenAPI v2 document in protobuf holding only `swagger: "2.0"`: Helm validates manifests against the server's
# OpenAPI; with no schema for a kind it checks nothing (kmock serves none).
EMPTY_OPENAPI_V2 = b"\x0a\x032.0"
ESTABLISHED = {"conditions": [{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}]}


@attrs.define(kw_only=True)
class HelmFriendlyEmulator(GaplessWatchEmulator):
    """What Helm's client needs besides kopf's: the core group's discovery as "v1" (kmock says "/v1"), lists with
    apiVersion/kind, a configurable server version, JSON watch streams, and server-side apply of new objects."""

    minor: int = 32

    async def _serve_version(self, request):  # type: ignore[no-untyped-def]
        resp = await super()._serve_version(request)
        if str(resp.get("groupVersion", "")).startswith("/"):
            resp["groupVersion"] = resp["groupVersion"][1:]
        return resp

    async def _serve_list(self, request):  # type: ignore[no-untyped-def]
        resp = await super()._serve_list(request)
        resp["apiVersion"] = api_version_of(request.resource)
        resp["kind"] = f"{kind_of_resource(self, request.resource)}List"
        return resp

    async def _serve_server_version(self, request):  # type: ignore[no-untyped-def]
        return {"major": "1", "minor": str(self.minor), "gitVersion": f"v1.{self.minor}.0", "platform": "linux/amd64"}

    async def __call__(self, raw_request):  # type: ignore[no-untyped-def]
        if raw_request.query.get("watch") in ("true", "1"):  # client-go decodes watch streams by content type
            original = raw_request._prepare_hook

            async def json_stream(response):  # type: ignore[no-untyped-def]
                if response.content_type == "application/octet-stream":
                    response.content_type = "application/json"
                await original(response)

            raw_request._prepare_hook = json_stream
        return await super().__call__(raw_request)

    async def _handle(self, request):  # type: ignore[no-untyped-def]
        ctype = str(request.headers.get("Content-Type") or "")
        if request.method == kmock.method.PATCH and ctype.startswith("application/apply-patch") and request.name:
            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:  # apply creates: stamp like a create
                md: dict[str, Any] = {"name": request.name, "uid": str(uuid.uuid4()), "generation": 1}
                if request.namespace:
                    md["namespace"] = request.namespace
                self.objects[key] = {"metadata": md}
            if request.resource.plural == "customresourcedefinitions" and isinstance(request.data, dict):
                request.data["status"] = ESTABLISHED  # what the API server reports once it serves the CRD
        return await super()._handle(request)


@pytest.fixture()
def k8s(kmock):
    declare_resources(kmock)
    kmock["get /openapi/v2"] << EMPTY_OPENAPI_V2
    return kmock


def helm_config(k: kmock.KubernetesEmulator) -> Any:
    return helm.Config(kube_apiserver=str(k.url).rstrip("/"), storage_driver="memory", namespace=NS)


def old_chart(tmp_path: Path) -> Path:
    """This chart as a previous version whose Topic CRD lacks spec.deletionPolicy."""
    chart = tmp_path / "krocket"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = "0.1.9"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    topic = chart / "files" / "crds" / "topic.yaml"
    crd = yaml.safe_load(topic.read_text())
    del _topic_spec_properties(crd)["deletionPolicy"]
    topic.write_text(yaml.safe_dump(crd))
    return chart


def _topic_spec_properties(crd: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    return props


@pytest.mark.kmock(cls=HelmFriendlyEmulator)
async def test_helm_upgrade_upgrades_the_crds_and_uninstall_keeps_them(k8s, tmp_path: Path) -> None:
    """The defect: CRDs in the chart's crds/ are installed once and never upgraded by Helm."""
    cfg = helm_config(k8s)
    try:
        await asyncio.to_thread(cfg.install, str(old_chart(tmp_path)), "demo", {}, namespace=NS, timeout=30)
        installed = get(k8s, CRDS, "", "topics.krocket.io") or get(k8s, CRDS, None, "topics.krocket.io")
        assert installed is not None, "the CRDs are release objects"
        assert "deletionPolicy" not in _topic_spec_properties(installed)
        assert installed["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert get(k8s, DEPLOYMENTS, NS, "demo-krocket-operator") is not None

        await asyncio.to_thread(cfg.upgrade, str(CHART), "demo", {}, namespace=NS, timeout=30)
        upgraded = get(k8s, CRDS, "", "topics.krocket.io") or get(k8s, CRDS, None, "topics.krocket.io")
        assert _topic_spec_properties(upgraded)["deletionPolicy"]["enum"] == ["Delete", "Retain"], (
            "helm upgrade applied the new CRD"
        )
        labels = upgraded["metadata"]["labels"]
        assert labels["helm.sh/chart"] == f"krocket-{yaml.safe_load((CHART / 'Chart.yaml').read_text())['version']}"

        await asyncio.to_thread(cfg.uninstall, "demo", timeout=30)
        assert get(k8s, DEPLOYMENTS, NS, "demo-krocket-operator") is None
        for name in ("topics.krocket.io", "brokergroups.krocket.io", "nameserversets.krocket.io"):
            assert (get(k8s, CRDS, "", name) or get(k8s, CRDS, None, name)) is not None, f"{name} kept on uninstall"
    finally:
        cfg.close()


@pytest.mark.kmock(cls=HelmFriendlyEmulator, minor=28)
async def test_an_api_server_older_than_the_crds_need_is_refused(k8s) -> None:
    cfg = helm_config(k8s)
    try:
        with pytest.raises(helm.HelmError, match="kubeVersion"):
            await asyncio.to_thread(cfg.install, str(CHART), "demo", {}, namespace=NS, timeout=30)
        assert get(k8s, CRDS, "", "topics.krocket.io") is None and get(k8s, CRDS, None, "topics.krocket.io") is None
    finally:
        cfg.close()


CLEANUP_JOB = "demo-krocket-operator-cleanup"


@pytest.mark.kmock(cls=HelmFriendlyEmulator)
async def test_uninstall_with_examples_leaves_no_topic_terminating(k8s, caplog) -> None:
    """The defect: with examples enabled, `helm uninstall` could delete the operator before the Topic, whose
    finalizer then stayed forever. Now the examples are removed by the pre-delete hook, operator still running."""
    brokers = FakeBrokers()
    cfg = helm_config(k8s)
    url = str(k8s.url).rstrip("/")
    values = {"examples": {"enabled": True}}
    try:
        async with running_operator(k8s, admin=brokers):
            await asyncio.to_thread(cfg.install, str(CHART), "demo", values, namespace=NS, timeout=120)
            topic = await wait_for(
                lambda: (t := get(k8s, f"{G}/topics", NS, "demo-example")) and condition(t)["status"] == "True" and t,
                what="example Topic Ready",
                timeout=60,
            )
            assert "krocket.io/finalizer" in topic["metadata"]["finalizers"]
            assert topic["metadata"]["annotations"]["helm.sh/hook"] == "post-install", "Helm's hook created it"
            applied = [r for r in k8s if r.resource == k8s.resource(f"{G}/topics") and r.method == kmock.method.PATCH]
            assert any("apply-patch" in str(r.headers.get("Content-Type")) for r in applied), "by server-side apply"
            assert "Example" in brokers.topics["fake://mq-system/demo-broker-a/0"]

            uninstall_error: list[BaseException] = []
            done = threading.Event()

            def uninstall() -> None:
                try:
                    cfg.uninstall("demo", timeout=120)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    uninstall_error.append(exc)
                finally:
                    done.set()

            thread = threading.Thread(target=uninstall, daemon=True)
            thread.start()
            await wait_for(
                lambda: get(k8s, JOBS, NS, CLEANUP_JOB) or done.is_set(), what="the pre-delete Job", timeout=60
            )
            assert not done.is_set(), f"uninstall ended before its pre-delete hook ran: {uninstall_error}"
            assert get(k8s, DEPLOYMENTS, NS, "demo-krocket-operator") is not None, "the operator is still there"

            # what the Job runs
            client = KubeClient(Credentials(server=url))
            nudging = asyncio.create_task(_nudge_terminating(k8s))
            caplog.set_level(logging.DEBUG, logger="kopf")
            try:
                deleted = await remove_release_resources(client, NS, "demo", timeout=90, poll=0.2)
            except CleanupTimeout as exc:
                raise AssertionError(
                    f"{exc}; kopf's last words on it:\n{_kopf_log_of(caplog, 'demo-namesrv')}"
                ) from exc
            finally:
                nudging.cancel()
                await client.close()
            assert deleted == [
                "Topic/demo-example",
                "BrokerGroup/demo-broker-a",
                "BrokerGroup/demo-broker-b",
                "NameServerSet/demo-namesrv",
            ]
            assert "Example" not in brokers.topics["fake://mq-system/demo-broker-a/0"], "the finalizer ran"
            await _complete_job(k8s, CLEANUP_JOB, done)
            assert not uninstall_error, uninstall_error

        for plural in ("topics", "brokergroups", "nameserversets"):
            assert not [
                key for key in k8s.objects if key[0] == k8s.resource(f"{G}/{plural}") and not k8s.objects[key].deleted
            ]
        assert get(k8s, JOBS, NS, CLEANUP_JOB) is None, "hook-succeeded removes the Job"
        assert get(k8s, DEPLOYMENTS, NS, "demo-krocket-operator") is None
    finally:
        cfg.close()


def _kopf_log_of(caplog: pytest.LogCaptureFixture, name: str, lines: int = 60) -> str:
    """kopf's last log lines about the object ``name`` (a failure's evidence: which handler or wait held it)."""
    found = [
        f"{r.relativeCreated / 1000:8.2f}s {r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("kopf") and name in f"{r.getMessage()} {getattr(r, 'k8s_ref', '')}"
    ]
    return "\n".join(found[-lines:]) or "(nothing logged)"


async def _nudge_terminating(k: kmock.KubernetesEmulator) -> None:
    """Touch an annotation on every krocket resource being deleted, every 2 s: kmock's watch can drop the event
    that sets deletionTimestamp (it subscribes after its snapshot), which a real API server never does (as
    tests/operator/api.py's delete_and_wait)."""
    nudge = 0
    while True:
        await asyncio.sleep(2.0)
        nudge += 1
        for plural in ("topics", "brokergroups", "nameserversets"):
            for key, obj in list(k.objects.items()):
                md = obj.raw.get("metadata", {})
                if key[0] != k.resource(f"{G}/{plural}") or obj.deleted or not md.get("deletionTimestamp"):
                    continue
                await k.patch(
                    f"/apis/{G}/namespaces/{md['namespace']}/{plural}/{md['name']}",
                    json={"metadata": {"annotations": {"test.krocket.io/nudge": str(nudge)}}},
                    headers={"Content-Type": "application/merge-patch+json"},
                )


async def _complete_job(k: kmock.KubernetesEmulator, name: str, done: threading.Event, timeout: float = 60) -> None:
    """Report the Job complete, as the Job controller would, until Helm has noticed (a status patch a second:
    Helm's informer may start after the first one and must see an event)."""
    status = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    deadline = asyncio.get_running_loop().time() + timeout
    while not done.is_set():
        assert asyncio.get_running_loop().time() < deadline, "helm uninstall never saw the Job complete"
        resp = await k.patch(
            f"/apis/batch/v1/namespaces/{NS}/jobs/{name}",
            json={"metadata": {"annotations": {"test/touched": str(uuid.uuid4())}}, "status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert resp.status < 300 or resp.status == 404, await resp.text()
        await asyncio.to_thread(done.wait, 1.0)


@pytest.mark.kmock(cls=StampingEmulator)
async def test_cleanup_times_out_when_no_operator_releases_the_finalizer(k8s) -> None:
    resp = await k8s.post(
        f"/apis/{G}/namespaces/{NS}/topics",
        json={
            "apiVersion": G,
            "kind": "Topic",
            "metadata": {
                "name": "stuck",
                "finalizers": ["krocket.io/finalizer"],
                "labels": {"app.kubernetes.io/instance": "demo", "app.kubernetes.io/managed-by": "Helm"},
            },
            "spec": {"placement": {"clusterName": "c1"}},
        },
    )
    assert resp.status < 300
    other = {
        "apiVersion": G,
        "kind": "Topic",
        "metadata": {"name": "mine", "labels": {"app.kubernetes.io/instance": "x"}},
    }
    assert (await k8s.post(f"/apis/{G}/namespaces/{NS}/topics", json=other)).status < 300
    client = KubeClient(Credentials(server=str(k8s.url).rstrip("/")))
    try:
        with pytest.raises(CleanupTimeout, match="stuck"):
            await remove_release_resources(client, NS, "demo", timeout=0.5, poll=0.1)
    finally:
        await client.close()
    assert get(k8s, f"{G}/topics", NS, "mine") is not None, "only the release's resources are deleted"


# --- the default namespace-scoped RBAC covers what the operator calls -------------------------------------------

CLUSTER_SCOPED = {"namespaces", "customresourcedefinitions", "clusterkopfpeerings"}
VERBS = {"list": "list", "watch": "watch", "fetch": "get", "create": "create", "update": "patch", "delete": "delete"}


def _rendered_rules(values: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(namespaced rules of the operator's Role, rules of its ClusterRoles) as the chart renders them."""
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="demo", namespace="mq")
    docs = [d for path, text in rendered.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    operator = [d for d in docs if "helm.sh/hook" not in (d["metadata"].get("annotations") or {})]
    role = [r for d in operator if d["kind"] == "Role" for r in d["rules"]]
    cluster = [r for d in operator if d["kind"] == "ClusterRole" for r in d["rules"]]
    return role, cluster


def _allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)


@pytest.mark.kmock(cls=StampingEmulator)
async def test_default_rbac_covers_every_call_the_operator_makes(k8s) -> None:
    """The operator watching only its namespace (the chart's default) makes no API call its Role and the discovery
    ClusterRole do not grant: children, status, events, finalizers, deletion. kopf runs cluster-wide here (kmock
    cannot serve the namespace list kopf reads with --namespace); its cluster-wide list/watch of namespaced kinds
    is what `--namespace mq` turns into the same calls in "mq", so it is checked against the Role."""
    role, cluster = _rendered_rules({})
    brokers = FakeBrokers()
    async with running_operator(k8s, admin=brokers):
        ops = [
            ("nameserversets", {"metadata": {"name": "namesrv"}, "spec": {"replicas": 1}}),
            ("brokergroups", {"metadata": {"name": "broker-a"}, "spec": {
                "nameServerSetRef": {"name": "namesrv"}, "clusterName": "c1", "slaves": 1,
                "image": "krocket/broker:0.1.0", "storage": {"size": "1Gi"}}}),
            ("topics", {"metadata": {"name": "orders"}, "spec": {
                "topicName": "Orders", "placement": {"clusterName": "c1"}, "readQueues": 4, "writeQueues": 4}}),
        ]  # fmt: skip
        for plural, body in ops:
            kind = {"nameserversets": "NameServerSet", "brokergroups": "BrokerGroup", "topics": "Topic"}[plural]
            resp = await k8s.post(f"/apis/{G}/namespaces/mq/{plural}", json={"apiVersion": G, "kind": kind, **body})
            assert resp.status < 300, await resp.text()
        await wait_for(
            lambda: (c := condition(get(k8s, f"{G}/topics", "mq", "orders"))) and c["status"] == "True",
            what="topic Ready",
            timeout=30,
        )
        await wait_for(lambda: get(k8s, "apps/v1/statefulsets", "mq", "broker-a"), what="broker StatefulSet")
        assert (await k8s.delete(f"/apis/{G}/namespaces/mq/topics/orders")).status < 300
        await wait_for(lambda: get(k8s, f"{G}/topics", "mq", "orders") is None, what="topic deleted", timeout=30)

    calls = set()
    for req in k8s:
        agent = str(req.headers.get("User-Agent") or "")
        if req.resource is None or req.resource.plural is None or agent.startswith("kmock/"):  # discovery, test client
            continue
        resource = req.resource.plural + (f"/{req.subresource}" if req.subresource else "")
        calls.add((req.resource.group, resource, VERBS[str(req.action).rsplit(".", 1)[-1].lower()], req.namespace))
    assert {c[1] for c in calls} >= {"statefulsets", "services", "configmaps", "topics", "topics/status", "events"}
    denied = []
    for group, resource, verb, namespace in sorted(calls, key=str):
        assert namespace in ("mq", None), f"a call in another namespace: {group}/{resource} {verb} in {namespace}"
        if resource.split("/")[0] in CLUSTER_SCOPED:
            if not _allowed(cluster, group, resource, verb):
                denied.append((group, resource, verb, "cluster-wide"))
        elif namespace is None and verb not in ("list", "watch"):
            denied.append((group, resource, verb, "a cluster-wide write"))
        elif not _allowed(role, group, resource, verb):
            denied.append((group, resource, verb))
    assert denied == [], f"calls the default RBAC does not grant: {denied}"
