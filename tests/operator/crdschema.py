"""Check custom resources against a CRD's openAPIV3Schema with jsonschema (no API server needed).

Approximates the apiextensions-apiserver: nullable, int-or-string, preserve-unknown-fields, and unknown
fields reported as PRUNED. CEL rules (x-kubernetes-validations) are not evaluated here; `cel_rules()` lists
them so tests can at least check they exist.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"


def load_crds() -> dict[str, dict[str, Any]]:
    """{kind: CRD} for every krocket CRD in crds/."""
    out = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["spec"]["group"] == "krocket.io":
                out[doc["spec"]["names"]["kind"]] = doc
    return out


def to_jsonschema(schema: dict[str, Any], flag_unknown: bool = True) -> dict[str, Any]:
    schema = copy.deepcopy(schema)

    def walk(n: Any) -> Any:
        if not isinstance(n, dict):
            return n
        if n.pop("x-kubernetes-int-or-string", False):
            n.pop("type", None)
            n["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if n.pop("nullable", False) and "type" in n:
            n["type"] = [n["type"], "null"]
        preserve = n.pop("x-kubernetes-preserve-unknown-fields", False)
        for k in [k for k in n if k.startswith("x-kubernetes-")]:
            n.pop(k)
        if "properties" in n:
            n["properties"] = {k: walk(v) for k, v in n["properties"].items()}
            if flag_unknown and not preserve and "additionalProperties" not in n:
                n["additionalProperties"] = False
        for key in ("items", "additionalProperties", "not"):
            if isinstance(n.get(key), dict):
                n[key] = walk(n[key])
        for key in ("allOf", "anyOf", "oneOf"):
            if isinstance(n.get(key), list):
                n[key] = [walk(x) for x in n[key]]
        return n

    return walk(schema)


def version_schema(crd: dict[str, Any], version: str = "v1alpha1") -> dict[str, Any]:
    ver = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    return ver["schema"]["openAPIV3Schema"]


def validate_cr(crd: dict[str, Any], cr: dict[str, Any]) -> list[str]:
    """'INVALID path: msg' / 'PRUNED path: msg' strings; empty means valid."""
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    gv = cr["apiVersion"].split("/")
    assert cr["kind"] == kind and gv[0] == group, "CR does not belong to this CRD"
    body = {k: v for k, v in cr.items() if k not in ("apiVersion", "kind", "metadata")}
    errors = []
    for e in jsonschema.Draft7Validator(to_jsonschema(version_schema(crd, gv[1]))).iter_errors(body):
        tag = "PRUNED" if e.validator == "additionalProperties" else "INVALID"
        errors.append(f"{tag} {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}")
    return errors


def apply_defaults(crd: dict[str, Any], cr: dict[str, Any]) -> dict[str, Any]:
    """Fill `default:` values the way the API server does (objects present or defaulted, then their fields)."""
    out = copy.deepcopy(cr)

    def walk(schema: dict[str, Any], node: Any) -> Any:
        if isinstance(node, dict) and "properties" in schema:
            for key, sub in schema["properties"].items():
                if key not in node and "default" in sub:
                    node[key] = copy.deepcopy(sub["default"])
                if key in node:
                    node[key] = walk(sub, node[key])
        if isinstance(node, list) and isinstance(schema.get("items"), dict):
            return [walk(schema["items"], x) for x in node]
        return node

    schema = version_schema(crd, cr["apiVersion"].split("/")[1])
    for key in ("spec",):
        if key in out:
            out[key] = walk(schema["properties"][key], out[key])
    return out


def cel_rules(schema: dict[str, Any], path: str = "") -> list[tuple[str, str]]:
    """[(path, rule)] for every x-kubernetes-validations rule in the schema."""
    found = [(path or "<root>", r["rule"]) for r in schema.get("x-kubernetes-validations", [])]
    for key, sub in (schema.get("properties") or {}).items():
        found += cel_rules(sub, f"{path}.{key}" if path else key)
    if isinstance(schema.get("items"), dict):
        found += cel_rules(schema["items"], f"{path}[]")
    return found
