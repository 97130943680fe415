"""Real-cluster end-to-end checks (kind, k3d or any reachable cluster with the krocket images loaded).

Skipped when no cluster is reachable. Run with: python -m pytest -m e2e tests/e2e
Expects the chart installed (`helm install krocket charts/krocket --set watch.allNamespaces=true`, or with
`watch.namespaces` naming the test namespace) and the images available to the cluster.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _cluster_reachable() -> bool:
    if not shutil.which("kubectl"):
        return False
    try:
        r = subprocess.run(
            ["kubectl", "version", "--request-timeout=3s", "-o", "json"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and b"serverVersion" in r.stdout


pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not _cluster_reachable(), reason="no reachable Kubernetes cluster (kubectl version failed)"),
]


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    r = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {r.stderr}")
    return r.stdout


def wait_jsonpath(kind: str, name: str, ns: str, path: str, want: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = kubectl("-n", ns, "get", kind, name, "-o", f"jsonpath={path}", check=False)
        if got == want:
            return
        time.sleep(5)
    raise AssertionError(f"{kind}/{name} {path} never became {want!r}")


@pytest.fixture()
def namespace():
    ns = f"krocket-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    yield ns
    kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_crds_installed():
    names = kubectl("get", "crd", "-o", "name")
    for crd in ("nameserversets.krocket.io", "brokergroups.krocket.io", "topics.krocket.io"):
        assert crd in names


def test_cel_rejects_write_queues_above_read(namespace):
    bad = {
        "apiVersion": "krocket.io/v1alpha1",
        "kind": "Topic",
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": {"placement": {"clusterName": "c"}, "readQueues": 2, "writeQueues": 4},
    }
    r = subprocess.run(["kubectl", "apply", "-f", "-"], input=json.dumps(bad), capture_output=True, text=True)
    assert r.returncode != 0 and "writeQueues must not exceed readQueues" in r.stderr


def test_example_cluster_becomes_ready_and_topic_applied(namespace):
    for name in ("nameserverset.yaml", "brokergroups.yaml", "topic.yaml"):
        text = (ROOT / "examples" / name).read_text().replace("namespace: mq", f"namespace: {namespace}")
        text = text.replace("size: 5Gi", "size: 1Gi")
        kubectl("apply", "-f", "-", stdin=text)
    wait_jsonpath("nameserverset", "namesrv", namespace, '{.status.conditions[?(@.type=="Ready")].status}', "True")
    for group in ("broker-a", "broker-b"):
        wait_jsonpath("brokergroup", group, namespace, '{.status.conditions[?(@.type=="Ready")].status}', "True")
    wait_jsonpath("topic", "orders", namespace, '{.status.conditions[?(@.type=="Ready")].status}', "True")
    status = json.loads(kubectl("-n", namespace, "get", "topic", "orders", "-o", "json"))["status"]
    assert sorted(p["brokerName"] for p in status["placement"]) == ["broker-a", "broker-b"]
    # scaling name servers never restarts brokers
    before = kubectl("-n", namespace, "get", "pod", "broker-a-0", "-o", "jsonpath={.metadata.uid}")
    kubectl("-n", namespace, "scale", "nameserverset", "namesrv", "--replicas=3")
    wait_jsonpath("nameserverset", "namesrv", namespace, "{.status.readyReplicas}", "3")
    assert kubectl("-n", namespace, "get", "pod", "broker-a-0", "-o", "jsonpath={.metadata.uid}") == before
