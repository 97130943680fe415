"""The Helm chart renders and lints without a helm binary (helm-python-sdk wraps Helm's Go SDK), every rendered
manifest validates against the Kubernetes schemas, RBAC is least-privilege and namespace-scoped by default, the
values schema refuses malformed resources/securityContext/affinity/tolerations, the CRDs are templates (upgraded
by `helm upgrade`, kept by `helm uninstall`) byte-identical to the top-level crds/, kubeVersion matches what the
CRDs need, and the uninstall and test hooks are what `helm uninstall` / `helm test` run."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.operator.crdschema import load_crds, validate_cr

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk==0.2.2 not installed (dev extra); chart rendering not checked"
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "krocket"
CHART_CRDS = CHART / "files" / "crds"

VALUES: dict[str, dict[str, Any]] = {
    "default": {},
    "cluster-wide": {"watch": {"allNamespaces": True}},
    "namespaced-leader-examples": {
        "watch": {"allNamespaces": False, "namespaces": ["team-a", "team-b"]},
        "leaderElection": {"enabled": True, "peeringName": "krocket"},
        "replicaCount": 2,
        "examples": {"enabled": True, "storageSize": "2Gi"},
        "image": {"repository": "reg.local/krocket/operator", "tag": "9.9.9", "pullPolicy": "Always"},
        "tolerations": [{"key": "mq", "operator": "Exists"}],
        "operator": {"resyncSeconds": 10, "statusSeconds": 5},
        "dashboards": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}},
    },
    "release-namespace-only": {"watch": {"allNamespaces": False}},
    "no-crds-no-metrics": {"crds": {"install": False}, "metricsPort": 0},
}


def render(values: dict[str, Any], revision: int | None = None) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="demo", namespace="mq-system", revision=revision)
    docs = []
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def container(docs: list[dict[str, Any]], kind: str = "Deployment") -> dict[str, Any]:
    [doc] = of_kind(docs, kind)
    spec = doc["spec"]["template"]["spec"] if kind != "Pod" else doc["spec"]
    return dict(spec["containers"][0])


def hook(doc: dict[str, Any]) -> str | None:
    return (doc["metadata"].get("annotations") or {}).get("helm.sh/hook")


@pytest.fixture(scope="module", params=list(VALUES), ids=list(VALUES))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(VALUES[request.param])


def test_chart_lints(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, _ = rendered
    result = helm.lint(str(CHART), VALUES[name], strict=True, kube_version="1.32.0")
    assert result["errors"] == [], result


def test_lint_rejects_bad_values() -> None:
    result = helm.lint(str(CHART), {"watch": {"allNamespaces": "yes"}})
    assert result["errors"], "values.schema.json should refuse a string for a boolean"


def test_rendered_manifests_validate(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    crds = load_crds()
    for doc in docs:
        if doc["apiVersion"].startswith("krocket.io/"):
            assert validate_cr(crds[doc["kind"]], doc) == [], doc
        elif doc["apiVersion"].startswith(("kopf.dev/", "monitoring.coreos.com/")):
            continue  # peering objects (schemaless) and PodMonitors: test_chart_monitor.py checks those
        else:
            kubernetes_validate.validate(doc, "1.32", strict=True)


# --- RBAC -----------------------------------------------------------------------------------------------------


def _operator_rules(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Rules of the operator's own Roles/ClusterRoles (not the uninstall hook's)."""
    return [
        (d["kind"], r)
        for d in docs
        if d["kind"] in ("Role", "ClusterRole") and hook(d) is None
        for r in d.get("rules", [])
    ]


def test_rbac_is_least_privilege(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for _, rule in _operator_rules(docs):
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert not any(r.startswith("pods/") for r in rule["resources"]), "no pods/exec or other pod subresources"
        if "secrets" in rule["resources"]:
            assert not {"list", "watch"} & set(rule["verbs"]), "the operator reads only the Secrets it names"
        if "delete" in rule["verbs"]:  # children go by garbage collection; these two the operator deletes itself
            assert set(rule["resources"]) <= {"pods", "configmaps"}, rule


# The client calls of the operator's code: `<client>.<verb>(KIND, ...)`, a status or scale subresource named after.
_CALL = re.compile(r"\.(get|list|create|patch|delete|get_scale|set_scale)\(\s*([A-Z][A-Z_]+)\b([^)\n]*)")


def _calls_in_operator_code() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every Kubernetes call the operator's modules make, read from the source:
    the calls naming a kind constant of krocket.operator.kube, and apply()'s get/create/patch of every child kind."""
    from krocket.operator import kube

    def group(k: kube.Kind) -> str:
        return k.api_version.rpartition("/")[0]

    calls: set[tuple[str, str, str]] = set()
    for path in (ROOT / "operator" / "krocket" / "operator").glob("*.py"):
        if path.name == "release_cleanup.py":  # the uninstall hook's Job, with its own Role
            continue
        for verb, const, rest in _CALL.findall(path.read_text()):
            k = getattr(kube, const, None)
            if not isinstance(k, kube.Kind):
                continue
            if verb in ("get_scale", "set_scale"):
                calls.add((group(k), f"{k.plural}/scale", "get" if verb == "get_scale" else "patch"))
            elif verb == "patch" and '"status"' in rest:
                calls.add((group(k), f"{k.plural}/status", "patch"))
            else:
                calls.add((group(k), k.plural, verb))
    for k in kube._BY_KIND.values():  # apply(): every child kind the builders return
        if k not in (kube.PODS, kube.PVCS):
            calls |= {(group(k), k.plural, v) for v in ("get", "create", "patch")}
    return calls


def test_the_default_role_grants_every_call_the_operator_code_makes() -> None:
    """The defect: forced master rolls delete pods and finished rolls delete old ConfigMaps, which the chart's
    Role did not allow (a static check; test_chart_install.py checks the calls a live run makes)."""
    [role] = [d for d in of_kind(render({}), "Role") if hook(d) is None]
    granted = {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    calls = _calls_in_operator_code()
    assert ("", "pods", "delete") in calls and ("", "configmaps", "delete") in calls  # the scan sees them
    assert not calls - granted, sorted(calls - granted)


def _args(docs: list[dict[str, Any]]) -> list[str]:
    return list(container(docs)["args"])


def test_default_install_is_namespace_scoped() -> None:
    """The defect: watch.allNamespaces defaulted to true, a ClusterRole with create/patch on StatefulSets,
    Services, ConfigMaps and PDBs in every namespace."""
    docs = render({})
    assert _args(docs)[:3] == ["operator", "--namespace", "mq-system"] and "--all-namespaces" not in _args(docs)
    roles = of_kind(docs, "Role")
    assert [(r["metadata"]["name"], r["metadata"]["namespace"]) for r in roles] == [
        ("demo-krocket-operator", "mq-system")
    ]
    [binding] = of_kind(docs, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "demo-krocket-operator",
    }
    for cluster_role in of_kind(docs, "ClusterRole"):
        granted = {(g, r) for rule in cluster_role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
        writes = {v for rule in cluster_role["rules"] for v in rule["verbs"]} & {"create", "patch", "update", "delete"}
        assert not writes, f"cluster-wide writes in {cluster_role['metadata']['name']}: {writes}"
        assert granted <= {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")}, granted


def test_watch_scope_matches_rbac_and_args() -> None:
    cluster = render({"watch": {"allNamespaces": True}})
    dep = of_kind(cluster, "Deployment")[0]
    args = _args(cluster)
    assert args[:2] == ["operator", "--all-namespaces"] and "--peering" not in args
    assert dep["spec"]["strategy"]["type"] == "Recreate" and dep["spec"]["replicas"] == 1
    assert any(k == "ClusterRole" and "statefulsets" in r["resources"] for k, r in _operator_rules(cluster))
    assert of_kind(cluster, "Role") == []

    scoped = render(VALUES["namespaced-leader-examples"])
    args = _args(scoped)
    assert args == [
        "operator",
        "--namespace",
        "team-a",
        "--namespace",
        "team-b",
        "--liveness-port",
        "8080",
        "--metrics-port",
        "8081",
        "--peering",
        "krocket",
    ]
    assert container(scoped)["image"] == "reg.local/krocket/operator:9.9.9"
    roles = [d for d in of_kind(scoped, "Role") if hook(d) is None]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert not any(k == "ClusterRole" and "statefulsets" in r["resources"] for k, r in _operator_rules(scoped)), (
        "namespaced mode grants no cluster-wide access to workloads"
    )
    assert {d["kind"] for d in scoped} >= {"KopfPeering", "NameServerSet", "BrokerGroup", "Topic"}

    own_ns = render(VALUES["release-namespace-only"])
    assert [d["metadata"]["namespace"] for d in of_kind(own_ns, "Role")] == ["mq-system"]


def test_every_rule_set_is_the_same_in_both_modes() -> None:
    """krocket.namespacedRules is the one place: the namespaced Role grants what the ClusterRole grants."""
    [namespaced] = of_kind(render({}), "Role")
    [cluster] = [
        d
        for d in of_kind(render({"watch": {"allNamespaces": True}}), "ClusterRole")
        if not d["metadata"]["name"].endswith("-discovery")
    ]
    assert namespaced["rules"] == cluster["rules"]


# --- values schema: resources, security contexts, affinity, tolerations -----------------------------------------

GOOD_VALUES = [
    {"resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": 1, "memory": "1.5Gi"}}},
    {"resources": {"requests": {"cpu": 0.5, "ephemeral-storage": "1e9"}}},
    {
        "podSecurityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"},
        }
    },
    {
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        }
    },
    {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["mq"]}]}]
                }
            }
        }
    },
    {"tolerations": [{"key": "mq", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]},
    {"nodeSelector": {"pool": "mq"}},
]

BAD_VALUES = {
    "resources-unknown-key": {"resources": {"request": {"cpu": "1"}}},
    "resources-bad-quantity": {"resources": {"limits": {"memory": "lots"}}},
    "resources-negative": {"resources": {"requests": {"cpu": -1}}},
    "resources-nested-object": {"resources": {"limits": {"memory": {"value": "1Gi"}}}},
    "pod-sc-string-user": {"podSecurityContext": {"runAsUser": "root"}},
    "pod-sc-unknown-field": {"podSecurityContext": {"privileged": True}},
    "pod-sc-seccomp-type": {"podSecurityContext": {"seccompProfile": {"type": "Default"}}},
    "sc-string-bool": {"securityContext": {"readOnlyRootFilesystem": "yes"}},
    "sc-capabilities-string": {"securityContext": {"capabilities": {"drop": "ALL"}}},
    "affinity-unknown": {"affinity": {"nodeSelector": {"a": "b"}}},
    "affinity-not-object": {"affinity": {"podAntiAffinity": "required"}},
    "toleration-operator": {"tolerations": [{"key": "mq", "operator": "Matches"}]},
    "toleration-unknown": {"tolerations": [{"key": "mq", "effects": "NoSchedule"}]},
    "node-selector-number": {"nodeSelector": {"pool": 1}},
    "metrics-port": {"metricsPort": 80},
    "crds-install": {"crds": {"install": "yes"}},
    "test-namesrv": {"test": {"namesrv": "no port"}},
    "dashboards-labels": {"dashboards": {"labels": {"grafana_dashboard": 1}}},
}


@pytest.mark.parametrize("values", GOOD_VALUES, ids=[next(iter(v)) + str(i) for i, v in enumerate(GOOD_VALUES)])
def test_schema_accepts_well_formed_pod_settings(values: dict[str, Any]) -> None:
    docs = render(values)
    dep = of_kind(docs, "Deployment")[0]
    kubernetes_validate.validate(dep, "1.32", strict=True)


@pytest.mark.parametrize("values", list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_schema_refuses_malformed_values(values: dict[str, Any]) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmError) as exc:
        chart.render(values, name="demo", namespace="mq-system")
    assert "values" in str(exc.value).lower() or "schema" in str(exc.value).lower(), exc.value
    assert helm.lint(str(CHART), values)["errors"]


# --- CRDs: templates, upgraded, kept --------------------------------------------------------------------------


def test_chart_crds_identical_to_top_level() -> None:
    top = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in CHART_CRDS.glob("*.yaml")}
    assert chart == top, "charts/krocket/files/crds must be a copy of crds/ (cp crds/*.yaml charts/krocket/files/crds/)"
    assert not (CHART / "crds").exists(), (
        "charts/krocket/crds/ is installed once and never upgraded by Helm, and conflicts with the CRD templates: "
        "copy CRDs to charts/krocket/files/crds/ instead"
    )


def _top_level_crds(leader_election: bool) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and (leader_election or not doc["metadata"]["name"].endswith(".kopf.dev")):
                out[doc["metadata"]["name"]] = doc
    return out


@pytest.mark.parametrize("leader_election", [False, True], ids=["standalone", "leader-election"])
def test_crds_are_rendered_with_the_keep_policy(leader_election: bool) -> None:
    docs = render({"leaderElection": {"enabled": leader_election}})
    rendered = {d["metadata"]["name"]: d for d in of_kind(docs, "CustomResourceDefinition")}
    expected = _top_level_crds(leader_election)
    assert set(rendered) == set(expected)
    for name, crd in rendered.items():
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", name
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert hook(crd) is None, "a release object (upgraded on helm upgrade), not a hook"
        want = copy.deepcopy(expected[name])
        got = copy.deepcopy(crd)
        for md in (want["metadata"], got["metadata"]):
            md.pop("labels", None)
            md.pop("annotations", None)
        assert got == want, f"{name}: the rendered CRD differs from crds/"
        kubernetes_validate.validate(crd, "1.32", strict=True)
    with helm.Chart.load(str(CHART)) as loaded:
        assert loaded.crds == [], "nothing in crds/: Helm would install it once and never upgrade it"


def test_crds_install_false_renders_no_crd() -> None:
    assert of_kind(render({"crds": {"install": False}}), "CustomResourceDefinition") == []


def test_kube_version_is_what_the_crds_need() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    uses_cel_quantity = any("quantity(" in p.read_text() for p in (ROOT / "crds").glob("*.yaml"))
    assert chart["kubeVersion"] == (">=1.29.0-0" if uses_cel_quantity else ">=1.28.0-0")
    assert helm.lint(str(CHART), {}, kube_version="1.32.0")["errors"] == []
    # lint does not check kubeVersion; test_chart_install.py installs against an API server that is too old.


# --- operator container ---------------------------------------------------------------------------------------


def test_operator_metrics_port_and_resources() -> None:
    ctr = container(render({}))
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in ctr["ports"]
    assert ctr["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert ctr["resources"]["limits"] == {"memory": "256Mi"}
    off = container(render({"metricsPort": 0}))
    assert [p["name"] for p in off["ports"]] == ["liveness"]
    assert off["args"][off["args"].index("--metrics-port") + 1] == "0"


# --- uninstall: the example resources go while the operator still runs ----------------------------------------


def test_examples_are_post_install_hooks_removed_by_a_pre_delete_job() -> None:
    """The defect: the examples were release objects, so `helm uninstall` could delete the operator Deployment
    before the Topic, whose finalizer then stayed forever. Now they are created after the CRDs (post-install)
    and a pre-delete Job deletes them while the operator still runs."""
    docs = render({"examples": {"enabled": True, "cleanupTimeoutSeconds": 120}})
    examples = [d for d in docs if d["apiVersion"].startswith("krocket.io/")]
    assert sorted(d["kind"] for d in examples) == ["BrokerGroup", "BrokerGroup", "NameServerSet", "Topic"]
    for ex in examples:
        assert hook(ex) == "post-install", ex["metadata"]["name"]
        assert "helm.sh/hook-delete-policy" not in ex["metadata"]["annotations"], "never deleted by Helm itself"
        assert ex["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
        assert ex["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    weights = {d["kind"]: int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for d in examples}
    assert weights["NameServerSet"] < weights["BrokerGroup"] < weights["Topic"]

    cleanup = [d for d in docs if hook(d) == "pre-delete"]
    assert sorted(d["kind"] for d in cleanup) == ["Job", "Role", "RoleBinding", "ServiceAccount"]
    [job] = of_kind(cleanup, "Job")
    ctr = job["spec"]["template"]["spec"]["containers"][0]
    assert ctr["command"] == ["python", "-m", "krocket.operator.release_cleanup"]
    assert ctr["args"] == ["--namespace", "mq-system", "--release", "demo", "--timeout", "120"]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "demo-krocket-operator-cleanup"
    assert job["spec"]["activeDeadlineSeconds"] > 120
    for doc in cleanup:
        policy = doc["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
        assert policy == "before-hook-creation,hook-succeeded"
        assert int(doc["metadata"]["annotations"]["helm.sh/hook-weight"]) <= (0 if doc is job else -9)
    [role] = of_kind(cleanup, "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["krocket.io"],
            "resources": ["topics", "brokergroups", "nameserversets"],
            "verbs": ["get", "list", "delete"],
        }
    ]
    assert not [d for d in render({}) if hook(d) == "pre-delete"], "no cleanup without examples"


# --- helm test ------------------------------------------------------------------------------------------------


def test_helm_test_pod_sends_and_consumes_one_message() -> None:
    docs = render({"examples": {"enabled": True}}, revision=3)
    [pod] = [d for d in of_kind(docs, "Pod") if hook(d) == "test"]
    ctr = container([pod], "Pod")
    env = {e["name"]: e["value"] for e in ctr["env"]}
    assert env == {
        "NAMESRV_ADDR": "demo-namesrv.mq-system.svc:9876",
        "TOPIC": "Example",
        "MARKER": "helm-test-demo-3",
        "TIMEOUT": "60",
    }
    script = ctr["args"][0]
    assert ctr["command"] == ["sh", "-c"]
    assert 'krocket send --topic "$TOPIC" --tag "$MARKER" "$MARKER" &&' in script
    assert '--group "$MARKER" --expression "$MARKER" --from first' in script and "--count 1" in script
    assert script.endswith('| grep -F "$MARKER"'), "consume exits 0 on timeout: the grep is what fails the test"
    assert pod["spec"]["restartPolicy"] == "Never"

    other = render({"test": {"namesrv": "ns.mq:9876", "topic": "Orders", "timeoutSeconds": 5}})
    env = {e["name"]: e["value"] for e in container([d for d in other if hook(d) == "test"], "Pod")["env"]}
    assert (env["NAMESRV_ADDR"], env["TOPIC"], env["TIMEOUT"]) == ("ns.mq:9876", "Orders", "5")
    assert not [d for d in render({}) if hook(d) == "test"], "nothing to test without a cluster"
    assert not [d for d in render({"examples": {"enabled": True}, "test": {"enabled": False}}) if hook(d) == "test"]


def test_the_cli_flags_the_test_pod_uses_exist() -> None:
    import argparse

    from krocket.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    send = {o for a in sub.choices["send"]._actions for o in a.option_strings}
    consume = {o for a in sub.choices["consume"]._actions for o in a.option_strings}
    assert {"--topic", "--tag"} <= send
    assert {"--topic", "--group", "--expression", "--from", "--count", "--timeout"} <= consume
    operator = {o for a in sub.choices["operator"]._actions for o in a.option_strings}
    assert {"--namespace", "--all-namespaces", "--liveness-port", "--metrics-port", "--peering"} <= operator
