"""Which names a resource may have, so that every child the operator derives from them is valid (pure).

The API server refuses a child whose name or label value breaks its rules (422 Invalid); these checks run before
anything is created, so a bad name is reported on the resource itself and nothing half-made is left. The CRDs carry
the same rules (`pattern`, `maxLength`, and CEL on `metadata.name`), so this is the second line for API servers
that let an object through anyway (an older CRD, a rule that cannot be expressed in the schema).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from krocket.common.topic import MAX_TOPIC_LENGTH
from krocket.operator import constants as c
from krocket.operator.build_common import meta, spec_of

DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
"""A Service name: lower-case letters, digits and '-', starting with a letter, ending with a letter or digit."""
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
"""A namespace name."""
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
"""A label value (non-empty): alphanumeric at both ends; '-', '_' and '.' inside."""
ROCKETMQ_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
"""A broker or cluster name as the CRD allows it (RocketMQ allows more; these are the ones labels can carry)."""
TOPIC_NAME = re.compile(r"^[%|a-zA-Z0-9_-]+$")

LABEL_MAX = 63
REVISION_HASH_LENGTH = 10
MAX_WORKLOAD_NAME = LABEL_MAX - 1 - REVISION_HASH_LENGTH
"""52: the StatefulSet controller labels every pod `controller-revision-hash: <statefulset>-<hash of up to 10
characters>`, a label value of at most 63 characters. The longest Service suffix the builders add ("-headless",
9 characters) needs at most 54, so the revision label is what limits a NameServerSet's or BrokerGroup's name."""

CLUSTER_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_]*[A-Za-z0-9])?$")
"""clusterName is the `krocket.io/cluster` label of every broker child and brokerClusterName in broker.yaml: a
label value that RocketMQ also accepts (no '.')."""


def _resource_name_problems(kind: str, name: str) -> list[str]:
    problems = []
    if len(name) > MAX_WORKLOAD_NAME:
        problems.append(
            f"metadata.name {name!r} is {len(name)} characters; a {kind} name may have at most {MAX_WORKLOAD_NAME} "
            f"(its pods carry the label controller-revision-hash=<name>-<{REVISION_HASH_LENGTH}-character hash>, "
            f"at most {LABEL_MAX} characters)"
        )
    if not DNS1035_LABEL.match(name):
        problems.append(
            f"metadata.name {name!r} cannot name the {kind}'s Services: use lower-case letters, digits and '-', "
            "starting with a letter and ending with a letter or digit (a DNS-1035 label; no '.')"
        )
    return problems


def nameserverset_problems(body: Mapping[str, Any]) -> list[str]:
    return _resource_name_problems(c.KIND_NAMESERVERSET, str(meta(body).get("name", "")))


def brokergroup_problems(body: Mapping[str, Any]) -> list[str]:
    spec = spec_of(body)
    problems = _resource_name_problems(c.KIND_BROKERGROUP, str(meta(body).get("name", "")))
    cluster = spec.get("clusterName")
    if cluster is not None and (len(str(cluster)) > LABEL_MAX or not CLUSTER_NAME.match(str(cluster))):
        problems.append(
            f"spec.clusterName {cluster!r} cannot be the krocket.io/cluster label of the group's children: use at "
            f"most {LABEL_MAX} letters, digits, '-' and '_', starting and ending with a letter or digit"
        )
    broker = spec.get("brokerName")
    if broker is not None and (len(str(broker)) > LABEL_MAX or not ROCKETMQ_NAME.match(str(broker))):
        problems.append(f"spec.brokerName {broker!r}: use at most {LABEL_MAX} letters, digits, '-' and '_'")
    ref = spec.get("nameServerSetRef") or {}
    ref_name, ref_ns = ref.get("name"), ref.get("namespace")
    if ref_name is not None and (len(str(ref_name)) > MAX_WORKLOAD_NAME or not DNS1035_LABEL.match(str(ref_name))):
        problems.append(
            f"spec.nameServerSetRef.name {ref_name!r} cannot be a NameServerSet's name: at most "
            f"{MAX_WORKLOAD_NAME} lower-case letters, digits and '-', starting with a letter"
        )
    if ref_ns is not None and (len(str(ref_ns)) > LABEL_MAX or not DNS1123_LABEL.match(str(ref_ns))):
        problems.append(f"spec.nameServerSetRef.namespace {ref_ns!r} is not a namespace name")
    return problems


def topic_problems(body: Mapping[str, Any]) -> list[str]:
    spec = spec_of(body)
    if spec.get("topicName"):
        name, where = str(spec["topicName"]), "spec.topicName"
    else:
        name, where = str(meta(body).get("name", "")), "metadata.name (the topic name when spec.topicName is unset)"
    if len(name) > MAX_TOPIC_LENGTH or not TOPIC_NAME.match(name):
        return [
            f"{where} {name!r} is not a topic name: use at most {MAX_TOPIC_LENGTH} letters, digits, '-', '_', "
            "'%' and '|'" + ("; set spec.topicName to choose another" if where.startswith("metadata") else "")
        ]
    return []


PROBLEMS_BY_KIND: Mapping[str, Callable[[Mapping[str, Any]], list[str]]] = {
    c.KIND_NAMESERVERSET: nameserverset_problems,
    c.KIND_BROKERGROUP: brokergroup_problems,
    c.KIND_TOPIC: topic_problems,
}


def name_problems(body: Mapping[str, Any]) -> list[str]:
    """Why the resource's names cannot be used (empty when they can); kinds without rules have none."""
    check = PROBLEMS_BY_KIND.get(str(body.get("kind", "")))
    return check(body) if check else []
