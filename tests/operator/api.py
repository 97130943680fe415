"""Requests and resource bodies for the operator's tests against kmock's emulated API server."""

from __future__ import annotations

from typing import Any

G = "krocket.io/v1alpha1"
NSS, BGS, TOPICS = f"{G}/nameserversets", f"{G}/brokergroups", f"{G}/topics"
CGS, USERS = f"{G}/consumergroups", f"{G}/users"
STS = "apps/v1/statefulsets"
MERGE = {"Content-Type": "application/merge-patch+json"}
CORE_PLURALS = ("pods", "secrets")
"""Plurals of the core API group (`/api/v1`); every other plural `create` takes is one of krocket's."""


def collection(plural: str, ns: str) -> str:
    prefix = "/api/v1" if plural in CORE_PLURALS else f"/apis/{G}"
    return f"{prefix}/namespaces/{ns}/{plural}"


def path(plural: str, ns: str, name: str) -> str:
    return f"{collection(plural, ns)}/{name}"


async def post(k, url: str, body: dict[str, Any]) -> None:
    resp = await k.post(url, json=body)
    assert resp.status < 300, await resp.text()


async def create(k, plural: str, ns: str, body: dict[str, Any]) -> None:
    await post(k, collection(plural, ns), body)


async def patch(k, url: str, body: dict[str, Any]) -> None:
    """A merge patch."""
    resp = await k.patch(url, json=body, headers=MERGE)
    assert resp.status < 300, await resp.text()


def resource(kind: str, name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": G, "kind": kind, "metadata": {"name": name, **metadata}, "spec": spec}


def nss_body(name: str = "namesrv", replicas: int = 2, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"annotations": annotations} if annotations else {}
    return resource("NameServerSet", name, {"replicas": replicas}, **md)


def bg_body(
    name: str,
    *,
    ref: dict[str, Any] | None = None,
    cluster: str = "c1",
    slaves: int = 0,
    metadata: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A BrokerGroup registering with `ref` (the name servers at ns:9876 unless given)."""
    spec = {"nameServerSetRef": dict(ref or {"address": "ns:9876"}), "clusterName": cluster, "slaves": slaves, **spec}
    return resource("BrokerGroup", name, spec, **(metadata or {}))


def topic_body(name: str, placement: dict[str, Any] | None = None, queues: int = 4, **spec: Any) -> dict[str, Any]:
    """A Topic of `queues` read and write queues on cluster c1 unless `placement` is given, deleted with it."""
    spec = {
        "placement": placement or {"clusterName": "c1"},
        "readQueues": queues,
        "writeQueues": queues,
        "perm": 6,
        "deletionPolicy": "Delete",
        **spec,
    }
    return resource("Topic", name, spec)


async def delete_and_wait(k, url: str, gone, what: str, timeout: float = 30.0) -> None:
    """Delete the resource at ``url`` and wait until ``gone()``. kmock's watch can drop the event that sets
    deletionTimestamp (it subscribes after its snapshot) and a steady operator writes nothing that would bring
    another, so the wait touches an annotation every 2 s: a real API server never drops it."""
    import asyncio
    import time

    resp = await k.delete(url)
    assert resp.status < 300, await resp.text()
    deadline = time.monotonic() + timeout
    nudge = 0
    while time.monotonic() < deadline:
        for _ in range(40):
            if gone():
                return
            await asyncio.sleep(0.05)
        nudge += 1
        await k.patch(url, json={"metadata": {"annotations": {"test.krocket.io/nudge": str(nudge)}}}, headers=MERGE)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
