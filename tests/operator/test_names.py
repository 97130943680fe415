"""Name rules (operator and CRDs agree), cross-namespace reference rules, quantity canonical form (pure)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from krocket.operator import names, references
from krocket.operator.quantity import canonical_quantity

from tests.operator.bodies import make_body
from tests.operator.crdschema import cel_rules, load_crds, validate_cr, version_schema

CRDS = load_crds()


def bg(name: str = "broker-a", ns: str = "mq", **spec: Any) -> dict[str, Any]:
    return make_body("BrokerGroup", name, {"nameServerSetRef": {"name": "namesrv"}, "clusterName": "c1", **spec}, ns)


def nss(name: str = "namesrv", ns: str = "mq", allowed: str | None = None) -> dict[str, Any]:
    meta = {"annotations": {"krocket.io/allowed-namespaces": allowed}} if allowed is not None else {}
    return make_body("NameServerSet", name, {}, ns, **meta)


# --- the operator's name checks ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rmq.a", "9rmq", "Rmq", "rmq-", "a" * 53, "broker_a"])
def test_names_no_service_or_revision_label_can_carry_are_refused(name):
    assert names.name_problems(make_body("NameServerSet", name, {}))
    assert names.name_problems(bg(name))


@pytest.mark.parametrize("name", ["a", "namesrv", "broker-a", "b2", "a" * 52])
def test_names_every_child_can_carry_pass(name):
    assert names.name_problems(make_body("NameServerSet", name, {})) == []
    assert names.name_problems(bg(name)) == []
    assert len(f"{name}-headless") <= names.LABEL_MAX  # the longest Service name
    assert len(f"{name}-0123456789") <= names.LABEL_MAX  # the pods' controller-revision-hash label


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"clusterName": "payments_"}, "spec.clusterName"),
        ({"clusterName": "-payments"}, "spec.clusterName"),
        ({"clusterName": "x" * 64}, "spec.clusterName"),
        ({"clusterName": "pay.ments"}, "spec.clusterName"),
        ({"brokerName": "broker a"}, "spec.brokerName"),
        ({"nameServerSetRef": {"name": "Namesrv"}}, "spec.nameServerSetRef.name"),
        ({"nameServerSetRef": {"name": "namesrv", "namespace": "Team_A"}}, "spec.nameServerSetRef.namespace"),
    ],
)
def test_spec_names_children_or_references_cannot_use_are_refused(spec, field):
    problems = names.name_problems(bg(**spec))
    assert len(problems) == 1 and problems[0].startswith(field), problems


def test_a_topic_named_by_its_resource_must_be_a_topic_name():
    assert names.name_problems(make_body("Topic", "orders.eu", {}))[0].startswith("metadata.name")
    assert names.name_problems(make_body("Topic", "orders.eu", {"topicName": "orders_eu"})) == []
    assert names.name_problems(make_body("Topic", "orders", {"topicName": "orders eu"}))[0].startswith("spec.topicName")


# --- the CRDs say the same ---------------------------------------------------------------------------


def _root_rules(kind: str) -> list[str]:
    return [rule for path, rule in cel_rules(version_schema(CRDS[kind])) if path == "<root>"]


@pytest.mark.parametrize("kind", ["NameServerSet", "BrokerGroup"])
def test_crd_metadata_name_rules_match_the_operators(kind):
    rules = _root_rules(kind)
    assert f"self.metadata.name.size() <= {names.MAX_WORKLOAD_NAME}" in rules
    patterns = [m.group(1) for r in rules if (m := re.search(r"matches\('(.+)'\)", r))]
    assert patterns == [names.DNS1035_LABEL.pattern]


def test_crd_topic_root_rule_refuses_dotted_names_without_topic_name():
    assert any("topicName" in r and "contains('.')" in r for r in _root_rules("Topic"))


def _bg_spec_schema() -> dict[str, Any]:
    return version_schema(CRDS["BrokerGroup"])["properties"]["spec"]


def test_crd_patterns_match_the_operators():
    spec = _bg_spec_schema()["properties"]
    assert spec["clusterName"]["pattern"] == names.CLUSTER_NAME.pattern
    assert spec["clusterName"]["maxLength"] == names.LABEL_MAX
    ref = spec["nameServerSetRef"]["properties"]
    assert ref["name"]["pattern"] == names.DNS1035_LABEL.pattern
    assert ref["name"]["maxLength"] == names.MAX_WORKLOAD_NAME
    assert ref["namespace"]["pattern"] == names.DNS1123_LABEL.pattern


@pytest.mark.parametrize("cluster", ["payments_", "-a", "a.b", "x" * 64])
def test_crd_refuses_cluster_names_a_label_cannot_carry(cluster):
    errors = validate_cr(CRDS["BrokerGroup"], bg(clusterName=cluster))
    assert any(e.startswith("INVALID spec.clusterName") for e in errors), errors


def test_crd_keeps_name_server_set_ref_namespace():
    body = bg(nameServerSetRef={"name": "namesrv", "namespace": "platform"})
    assert validate_cr(CRDS["BrokerGroup"], body) == []  # not PRUNED: the operator reads it


@pytest.mark.parametrize(
    ("path", "what"),
    [("clusterName", "clusterName"), ("brokerName", "brokerName"), ("nameServerSetRef", "nameServerSetRef")],
)
def test_crd_identity_fields_are_immutable(path, what):
    rules = cel_rules(_bg_spec_schema(), "spec")
    assert (f"spec.{path}", "self == oldSelf") in rules, what


def test_crd_topic_name_is_immutable():
    spec = version_schema(CRDS["Topic"])["properties"]["spec"]
    assert ("spec.topicName", "self == oldSelf") in cel_rules(spec, "spec")


# --- references into other namespaces ---------------------------------------------------------------


def test_same_namespace_references_need_no_consent():
    assert references.targets(bg()) == []
    assert references.targets(bg(nameServerSetRef={"name": "namesrv", "namespace": "mq"})) == []
    assert references.targets(bg(nameServerSetRef={"address": "namesrv-headless.mq.svc:9876"})) == []


def test_a_named_reference_into_another_namespace_is_a_target():
    [target] = references.targets(bg(nameServerSetRef={"name": "namesrv", "namespace": "platform"}))
    assert (target.namespace, target.candidates) == ("platform", ("namesrv",))


@pytest.mark.parametrize(
    ("address", "candidates"),
    [
        ("namesrv-headless.platform.svc:9876", ("namesrv", "namesrv-headless")),
        ("namesrv.platform.svc.cluster.local:9876", ("namesrv",)),
        ("namesrv-0.namesrv-headless.platform.svc:9876;namesrv-1.namesrv-headless.platform.svc:9876", None),
    ],
)
def test_an_address_of_an_in_cluster_service_is_a_target(address, candidates):
    [target] = references.targets(bg(nameServerSetRef={"address": address}))
    assert target.namespace == "platform"
    assert target.candidates == (candidates or ("namesrv", "namesrv-headless"))


@pytest.mark.parametrize("address", ["10.0.0.1:9876;10.0.0.2:9876", "mq.example.com:9876", "[fd00::1]:9876"])
def test_addresses_outside_the_cluster_are_not_targets(address):
    assert references.targets(bg(nameServerSetRef={"address": address})) == []


@pytest.mark.parametrize(
    ("allowed", "ok"), [(None, False), ("", False), ("team-b", False), ("team-b, mq", True), ("*", True)]
)
def test_a_name_server_set_accepts_the_namespaces_it_lists(allowed, ok):
    target = references.Target("platform", ("namesrv",), "nameServerSetRef")
    why = references.refusal(bg(), target, nss(ns="platform", allowed=allowed))
    assert (why is None) == ok
    if why is not None:
        assert 'krocket.io/allowed-namespaces: "mq"' in why


# --- quantities as the API server writes them --------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("1000m", "1"),
        ("4096Mi", "4Gi"),
        ("1.5Gi", "1536Mi"),
        ("0.5", "500m"),
        ("2000Mi", "2000Mi"),
        ("1500m", "1500m"),
        (2, "2"),
        ("0.5Ki", "512"),
        ("1e3", "1e3"),
        ("0.1m", "1m"),
    ],
)
def test_canonical_quantity(written, stored):
    assert canonical_quantity(written) == stored


def _example_resources() -> list[dict[str, Any]]:
    root = Path(__file__).resolve().parents[2] / "examples"
    docs = [d for path in sorted(root.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    return [d for d in docs if str(d.get("apiVersion", "")).startswith("krocket.io/")]


@pytest.mark.parametrize("doc", _example_resources(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_example_has_names_the_operator_accepts(doc):
    assert names.name_problems(doc) == []
