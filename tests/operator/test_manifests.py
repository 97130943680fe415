"""Offline schema checks: every manifest the operator builds validates against the Kubernetes schemas,
the CRDs are valid CRDs, and example resources and operator-written status match the CRD schemas."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from krocket.operator import build_brokergroup, build_namesrv, status_brokergroup, status_nameserverset
from krocket.operator import conditions as cond
from krocket.operator.status_brokergroup import PodView

from tests.operator.bodies import make_body
from tests.operator.crdschema import apply_defaults, cel_rules, load_crds, validate_cr, version_schema

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSIONS = ["1.30", "1.32"]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _all_builder_outputs() -> list[dict]:
    crds = load_crds()
    nss = apply_defaults(crds["NameServerSet"], make_body("NameServerSet", "ns1", {"replicas": 3}))
    nss_custom = apply_defaults(
        crds["NameServerSet"],
        make_body(
            "NameServerSet",
            "ns2",
            {
                "service": {"type": "NodePort"},
                "resources": {"limits": {"cpu": 1, "memory": "1Gi"}},
                "podTemplate": {"spec": {"tolerations": [{"key": "mq", "operator": "Exists"}]}},
            },
        ),
    )
    group = apply_defaults(
        crds["BrokerGroup"], make_body("BrokerGroup", "broker-a", {"nameServerSetRef": {"name": "ns1"}})
    )
    group_custom = apply_defaults(
        crds["BrokerGroup"],
        make_body(
            "BrokerGroup",
            "broker-b",
            {
                "nameServerSetRef": {"name": "ns1"},
                "slaves": 2,
                "podAntiAffinity": "preferred",
                "storage": {"storageClassName": "fast", "size": "1Ti"},
                "podTemplate": {
                    "metadata": {"annotations": {"prometheus.io/scrape": "true"}},
                    "spec": {"containers": [{"name": "exporter", "image": "busybox"}]},
                },
            },
        ),
    )
    ephemeral = apply_defaults(
        crds["BrokerGroup"],
        make_body("BrokerGroup", "e", {"nameServerSetRef": {"name": "ns1"}, "storage": {"ephemeral": True}}),
    )
    out = []
    for body in (nss, nss_custom):
        out += build_namesrv.children(body)
    for body in (group, group_custom, ephemeral):
        out += build_brokergroup.children(body, partition=1)
    return out


BUILT = _all_builder_outputs()


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("manifest", BUILT, ids=lambda m: f"{m['kind']}-{m['metadata']['name']}")
def test_builder_output_matches_k8s_schema(manifest, version):
    kubernetes_validate.validate(manifest, version, strict=True)


def test_schema_check_catches_a_bad_statefulset():
    bad = yaml.safe_load(yaml.safe_dump(next(m for m in BUILT if m["kind"] == "StatefulSet")))
    bad["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.32", strict=True)


@pytest.mark.parametrize("path", sorted((ROOT / "crds").glob("*.yaml")), ids=lambda p: p.name)
def test_crd_is_valid(path):
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, "1.32", strict=True)


def test_crds_have_status_scale_printer_columns_and_category():
    crds = load_crds()
    assert set(crds) == {"NameServerSet", "BrokerGroup", "Topic", "ConsumerGroup", "User"}
    for kind, crd in crds.items():
        (ver,) = crd["spec"]["versions"]
        assert ver["name"] == "v1alpha1" and "status" in ver["subresources"]
        assert "krocket" in crd["spec"]["names"]["categories"] and crd["spec"]["names"]["shortNames"]
        assert any(col["name"] == "Status" for col in ver["additionalPrinterColumns"]), kind
        status = version_schema(crd)["properties"]["status"]["properties"]
        assert {"conditions", "observedGeneration"} <= set(status)
    assert crds["NameServerSet"]["spec"]["versions"][0]["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert crds["BrokerGroup"]["spec"]["versions"][0]["subresources"]["scale"]["specReplicasPath"] == ".spec.slaves"


def test_cel_rules_cover_immutable_and_shrinking_fields():
    crds = load_crds()
    topic = cel_rules(version_schema(crds["Topic"]))
    assert ("spec.topicName", "self == oldSelf") in topic
    assert ("spec", "self.writeQueues <= self.readQueues") in topic
    group = cel_rules(version_schema(crds["BrokerGroup"]))
    rules = "\n".join(f"{p}: {r}" for p, r in group)
    assert "spec.storage.size: quantity(self).compareTo(quantity(oldSelf)) >= 0" in rules
    assert "storageClassName == oldSelf.storageClassName" in rules
    assert "spec.brokerName: self == oldSelf" in rules


def _example_docs():
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield pytest.param(doc, id=f"{path.name}:{doc['kind']}/{doc['metadata']['name']}")


@pytest.mark.parametrize("doc", list(_example_docs()))
def test_examples_validate(doc):
    if doc["apiVersion"].startswith("krocket.io/"):
        crd = load_crds()[doc["kind"]]
        assert validate_cr(crd, doc) == []
        assert validate_cr(crd, apply_defaults(crd, doc)) == []
    else:
        kubernetes_validate.validate(doc, "1.32", strict=True)


def test_crd_helper_reports_invalid_and_pruned():
    crd = load_crds()["Topic"]
    bad = make_body("Topic", "t", {"placement": {"clusterName": "c"}, "perm": 7, "bogus": 1})
    errors = validate_cr(crd, bad)
    assert any(e.startswith("INVALID spec.perm") for e in errors)
    assert any(e.startswith("PRUNED spec") and "bogus" in e for e in errors)


def test_status_written_by_the_operator_matches_crd():
    crds = load_crds()
    nss = apply_defaults(crds["NameServerSet"], make_body("NameServerSet", "ns1", {}))
    sts = {"status": {"replicas": 2, "readyReplicas": 1}}
    status = cond.status_with_conditions(
        nss, status_nameserverset.status(nss, sts), [status_nameserverset.ready_condition(nss, sts)]
    )
    assert validate_cr(crds["NameServerSet"], {**nss, "status": status}) == []

    group = apply_defaults(crds["BrokerGroup"], make_body("BrokerGroup", "g", {"nameServerSetRef": {"name": "n"}}))
    pods = [
        PodView(0, "g-0", "g-0.g-headless.mq.svc:10911", True, {"maxPhyOffset": 1000, "registered": True}),
        PodView(1, "g-1", "g-1.g-headless.mq.svc:10911", True, {"maxPhyOffset": 900, "registered": True}),
    ]
    gstatus = status_brokergroup.status(group, {"status": {"replicas": 2, "readyReplicas": 2}}, pods, 50)
    assert gstatus["slaves"][0]["lagBytes"] == 100 and gstatus["slaves"][0]["inSync"] is False
    ready = status_brokergroup.ready_condition(group, {"status": {"readyReplicas": 2}})
    gstatus = cond.status_with_conditions(group, gstatus, [ready])
    assert validate_cr(crds["BrokerGroup"], {**group, "status": gstatus}) == []
