"""The Helm chart renders and lints without a helm binary (helm-python-sdk wraps Helm's Go SDK), every
rendered manifest validates against the Kubernetes schemas, RBAC is least-privilege, and the chart's CRDs
are byte-identical to the top-level crds/."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.operator.crdschema import load_crds, validate_cr

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk==0.2.2 not installed (dev extra); chart rendering not checked"
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "krocket"

VALUES = {
    "default": {},
    "namespaced-leader-examples": {
        "watch": {"allNamespaces": False, "namespaces": ["team-a", "team-b"]},
        "leaderElection": {"enabled": True, "peeringName": "krocket"},
        "replicaCount": 2,
        "examples": {"enabled": True, "storageSize": "2Gi"},
        "image": {"repository": "reg.local/krocket/operator", "tag": "9.9.9", "pullPolicy": "Always"},
        "tolerations": [{"key": "mq", "operator": "Exists"}],
        "operator": {"resyncSeconds": 10, "statusSeconds": 5},
    },
    "release-namespace-only": {"watch": {"allNamespaces": False}},
}


def render(values: dict) -> list[dict]:
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="demo", namespace="mq-system")
    docs = []
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


@pytest.fixture(scope="module", params=list(VALUES), ids=list(VALUES))
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(VALUES[request.param])


def test_chart_lints(rendered):
    name, _ = rendered
    result = helm.lint(str(CHART), VALUES[name], strict=True, kube_version="1.32.0")
    assert result["errors"] == [], result


def test_lint_rejects_bad_values():
    result = helm.lint(str(CHART), {"watch": {"allNamespaces": "yes"}})
    assert result["errors"], "values.schema.json should refuse a string for a boolean"


def test_rendered_manifests_validate(rendered):
    _, docs = rendered
    crds = load_crds()
    for doc in docs:
        if doc["apiVersion"].startswith("krocket.io/"):
            assert validate_cr(crds[doc["kind"]], doc) == [], doc
        elif doc["apiVersion"].startswith("kopf.dev/"):
            continue  # peering objects: schemaless status only
        else:
            kubernetes_validate.validate(doc, "1.32", strict=True)


def _rules(docs: list[dict]) -> list[tuple[str, dict]]:
    return [(d["kind"], r) for d in docs if d["kind"] in ("Role", "ClusterRole") for r in d.get("rules", [])]


def test_rbac_is_least_privilege(rendered):
    _, docs = rendered
    for _, rule in _rules(docs):
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert not any(r.startswith("pods/") for r in rule["resources"]), "no pods/exec or other pod subresources"
        assert "secrets" not in rule["resources"]
        assert "delete" not in rule["verbs"] or rule["resources"] == [], "children are removed by garbage collection"


def test_watch_scope_matches_rbac_and_args():
    cluster = render({})
    dep = next(d for d in cluster if d["kind"] == "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["operator", "--all-namespaces"] and "--peering" not in args
    assert dep["spec"]["strategy"]["type"] == "Recreate" and dep["spec"]["replicas"] == 1
    assert any(k == "ClusterRole" and "statefulsets" in r["resources"] for k, r in _rules(cluster))

    scoped = render(VALUES["namespaced-leader-examples"])
    dep = next(d for d in scoped if d["kind"] == "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["operator", "--namespace", "team-a", "--namespace", "team-b", "--liveness-port", "8080",
                    "--peering", "krocket"]  # fmt: skip
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.local/krocket/operator:9.9.9"
    roles = [d for d in scoped if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert not any(k == "ClusterRole" and "statefulsets" in r["resources"] for k, r in _rules(scoped)), (
        "namespaced mode grants no cluster-wide access to workloads"
    )
    assert {d["kind"] for d in scoped} >= {"KopfPeering", "NameServerSet", "BrokerGroup", "Topic"}

    own_ns = render(VALUES["release-namespace-only"])
    assert [d["metadata"]["namespace"] for d in own_ns if d["kind"] == "Role"] == ["mq-system"]


def test_chart_crds_identical_to_top_level():
    top = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert chart == top, "charts/krocket/crds must be a copy of crds/ (cp crds/*.yaml charts/krocket/crds/)"
    with helm.Chart.load(str(CHART)) as loaded:
        assert len(loaded.crds) == len(top)
