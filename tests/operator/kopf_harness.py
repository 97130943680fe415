"""Run the krocket operator (kopf) against kmock's Kubernetes emulator, with fake or real brokers.

- `StampingEmulator`: kmock plus the server-side metadata kopf relies on (namespace, uid,
  resourceVersion, generation, creationTimestamp) and 422 on a failed JSON-patch `test`.
- `OperatorThread`: kopf in its own thread and event loop (fast teardown, no interference with the test
  loop that serves the emulator), with a fresh registry and its own OperatorContext.
- `FakeBrokers`: an in-memory stand-in for broker admin APIs, keyed by URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
import kopf

from krocket.common.topic import TopicConfig
from krocket.operator import constants as c
from krocket.operator.broker_admin import BrokerUnavailable
from krocket.operator.build_common import meta
from krocket.operator.context import OperatorConfig, OperatorContext
from krocket.operator.handlers import register
from krocket.operator.kube import Credentials
from krocket.operator.quantity import canonical_quantity

_rv = itertools.count(1000)

CR_RESOURCES = {
    f"{c.API_VERSION}/{c.NAMESERVERSETS}": ("NameServerSet", "nameserverset", ["status", "scale"]),
    f"{c.API_VERSION}/{c.BROKERGROUPS}": ("BrokerGroup", "brokergroup", ["status", "scale"]),
    f"{c.API_VERSION}/{c.TOPICS}": ("Topic", "topic", ["status"]),
    f"{c.API_VERSION}/{c.CONSUMERGROUPS}": ("ConsumerGroup", "consumergroup", ["status"]),
    f"{c.API_VERSION}/{c.USERS}": ("User", "user", ["status"]),
}
# Resources of other operators the krocket operator creates but does not watch (cert-manager's Certificate).
FOREIGN_RESOURCES = {"cert-manager.io/v1/certificates": ("Certificate", "certificate", ["status"])}
WATCHED = [*CR_RESOURCES, "apps/v1/statefulsets"]


def api_version_of(res: Any) -> str:
    return f"{res.group}/{res.version}" if res.group else str(res.version)


def kind_of_resource(k: kmock.KubernetesEmulator, res: Any) -> str:
    info = k.resources[res] if res in k.resources else None  # noqa: SIM401 - a kmock ResourcesArray, no .get()
    return str(info.kind) if info and info.kind else str(res.plural.capitalize())


@attrs.define(kw_only=True)
class StampingEmulator(kmock.KubernetesEmulator):
    # Opt-in, set by a test: `refuse(request)` returns a kmock.KubernetesError to answer instead of storing anything
    # (an API server refusing a name, RBAC, ...); `normalise_quantities` stores the resource quantities of built-in
    # kinds the way the API server does (`1000m` -> `1`, `4096Mi` -> `4Gi`).
    refuse: Callable[[Any], kmock.KubernetesError | None] | None = None
    normalise_quantities: bool = False

    async def _handle(self, request):  # type: ignore[no-untyped-def]
        data = request.data
        if request.resource is not None and self.refuse is not None and (error := self.refuse(request)) is not None:
            raise error
        if (
            self.normalise_quantities
            and request.action in (kmock.action.CREATE, kmock.action.UPDATE)
            and request.resource is not None
            and request.resource.group != c.GROUP  # built-in kinds; a CRD's int-or-string stays as written
        ):
            canonicalise_quantities(data)
        if request.resource is not None and request.subresource == "scale" and request.name is not None:
            return await self._handle_scale(request)
        if request.resource is not None and request.subresource in (None, "status"):
            if request.action == kmock.action.CREATE and isinstance(data, dict):
                md = data.setdefault("metadata", {})
                if request.namespace and not md.get("namespace"):
                    md["namespace"] = request.namespace
                if not md.get("name") and md.get("generateName"):
                    md["name"] = f"{md['generateName']}{uuid.uuid4().hex[:8]}"  # kopf posts events this way
                md.setdefault("uid", str(uuid.uuid4()))
                md["resourceVersion"] = str(next(_rv))
                md.setdefault("generation", 1)
                md.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            elif request.action == kmock.action.UPDATE and request.name is not None:
                key = (request.resource, request.namespace, request.name)
                current = self.objects[key] if key in self.objects and not self.objects[key].deleted else None
                new_rv = str(next(_rv))
                if isinstance(data, list):
                    if current is not None:
                        try:
                            jsonpatch.apply_patch(dict(current.raw), [op for op in data if op.get("op") == "test"])
                        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(e)) from e
                    data.append({"op": "add", "path": "/metadata/resourceVersion", "value": new_rv})
                elif isinstance(data, dict):
                    if data.get("metadata") is None:
                        data["metadata"] = {}
                    data["metadata"]["resourceVersion"] = new_rv
                    if "spec" in data and current is not None and request.subresource is None:
                        gen = int(dict(current.get("metadata", {})).get("generation", 1))
                        data["metadata"]["generation"] = gen + 1
        return await super()._handle(request)

    async def _handle_scale(self, request):  # type: ignore[no-untyped-def]
        """`<resource>/<name>/scale` as an API server serves it: an autoscaling/v1 Scale that reads and writes
        only the object's spec.replicas (kmock alone would merge the PATCH body into the whole object)."""
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        if request.action == kmock.action.UPDATE:
            body = request.data if isinstance(request.data, dict) else {}
            replicas = (body.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise kmock.KubernetesError(status=422, reason="Invalid", message=f"spec.replicas: {replicas!r}")
            gen = int(dict(self.objects[key].get("metadata", {})).get("generation", 1))
            stamp = {"resourceVersion": str(next(_rv)), "generation": gen + 1}
            patch = {"spec": {"replicas": replicas}, "metadata": stamp}
            async with self._lock:
                self.objects[key].patch(patch)
                await self._buses[request.resource].put({"type": "MODIFIED", "object": self.objects[key].raw})
        return aiohttp.web.json_response(scale_of(self.objects[key].raw))


@attrs.define(kw_only=True)
class GaplessWatchEmulator(StampingEmulator):
    """For Helm's client (tests/operator/test_chart_install.py): watches with no gap between the snapshot and the
    event stream, and the initial-events bookmark. Not the default: kopf's own flows rely on kmock's watch as it
    is (with this watch their finalizer deletions stall)."""

    async def _serve_watch(self, request):  # type: ignore[no-untyped-def]
        """kmock's watch, without its gap (it subscribes to the event bus after the snapshot of existing objects,
        so an event in between is lost), and with the bookmark that ends the initial events client-go's informers
        ask for (``sendInitialEvents=true``)."""
        yield b""
        bus = self._buses[request.resource]
        async with self._lock:  # the lock every change takes before it publishes its event
            objs = [o for o in self._KubernetesEmulator__get_objs(request, strict=False) if not o.deleted]
            events = [{"type": "ADDED", "object": o.raw} for o in objs]
            marker = await bus.mark()
        try:
            for event in events:
                yield event
            if request.params.get("sendInitialEvents") == "true":
                yield {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": kind_of_resource(self, request.resource),
                        "apiVersion": api_version_of(request.resource),
                        "metadata": {"resourceVersion": "1", "annotations": {"k8s.io/initial-events-end": "true"}},
                    },
                }
            async for event in bus.stream(since=marker):
                md = event.get("object", {}).get("metadata", {})
                if self._KubernetesEmulator__check(
                    request, request.resource, md.get("namespace"), md.get("name"), strict=False
                ):
                    yield event
        finally:
            await bus.unmark(marker)


def scale_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The autoscaling/v1 Scale of a workload (spec.replicas defaults to 1, as for a Deployment)."""
    md = obj.get("metadata") or {}
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in md},
        "spec": {"replicas": int((obj.get("spec") or {}).get("replicas", 1))},
        "status": {"replicas": int((obj.get("status") or {}).get("replicas", 0))},
    }


def canonicalise_quantities(node: Any, in_quantities: bool = False) -> None:
    """Rewrite, in place, every value of a `limits`/`requests` map into the API server's canonical quantity form."""
    if isinstance(node, dict):
        for key, value in node.items():
            if in_quantities and isinstance(value, str | int | float) and not isinstance(value, bool):
                node[key] = canonical_quantity(value)
            else:
                canonicalise_quantities(value, key in ("limits", "requests"))
    elif isinstance(node, list):
        for item in node:
            canonicalise_quantities(item)


def declare_resources(k: kmock.KubernetesEmulator) -> None:
    k.resources.load_bundled()
    for res, (kind, singular, subresources) in {**CR_RESOURCES, **FOREIGN_RESOURCES}.items():
        k.resources[res] = {
            "kind": kind,
            "singular": singular,
            "namespaced": True,
            "verbs": ["list", "watch", "get", "patch", "create", "delete"],
            "shortnames": [],
            "categories": ["krocket"],
            "subresources": subresources,
        }


# --- reading the emulator ---------------------------------------------------------------------------


def get(k: kmock.KubernetesEmulator, res: str, ns: str, name: str) -> dict[str, Any] | None:
    key = (k.resource(res), ns, name)
    if key not in k.objects:
        return None
    obj = k.objects[key]
    return None if obj.deleted else obj.raw


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition", interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (KeyError, TypeError, IndexError, AttributeError) as e:
            last_exc = e
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})")


def condition(obj: Mapping[str, Any] | None, ctype: str = "Ready") -> dict[str, Any] | None:
    for cnd in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cnd.get("type") == ctype:
            return cnd
    return None


def event_reasons(k: kmock.KubernetesEmulator, ns: str) -> list[str]:
    out = []
    for req in k[k.resource("v1/events"), "post"]:
        if isinstance(req.data, dict) and req.data.get("metadata", {}).get("namespace", ns) == ns:
            out.append(req.data.get("reason"))
    return out


# --- fake brokers -----------------------------------------------------------------------------------


class FakeBrokers:
    """Broker admin API in memory. URLs look like fake://<ns>/<group>/<ordinal>."""

    def __init__(self) -> None:
        self.topics: dict[str, dict[str, dict[str, Any]]] = {}
        self.info: dict[str, dict[str, Any]] = {}
        self.down: set[str] = set()
        self.writable: dict[str, bool] = {}  # url -> broker write permission (absent: writable)
        self.permission_calls: list[tuple[str, bool]] = []
        self.lag: dict[str, list[dict[str, Any]]] = {}  # url -> consumer_lag() answer, set by a test
        self.groups: dict[str, dict[str, dict[str, Any]]] = {}  # url -> group name -> subscription group config
        self.offsets: dict[str, dict[str, dict[str, Any]]] = {}  # url -> group -> group_offsets() answer
        self.lock = threading.Lock()

    def _check(self, url: str) -> None:
        if any(url.startswith(d) for d in self.down):
            raise BrokerUnavailable(f"{url} is down")

    async def broker_info(self, url: str) -> dict[str, Any]:
        self._check(url)
        info = dict(self.info.get(url, {"registered": True, "maxPhyOffset": 0}))
        info.setdefault("brokerPermission", 6 if self.writable.get(url, True) else 4)  # as the broker reports it
        return info

    async def ready(self, url: str) -> bool:
        return url not in self.down

    async def list_topics(self, url: str) -> list[dict[str, Any]]:
        self._check(url)
        return list(self.topics.get(url, {}).values())

    async def get_topic(self, url: str, topic: str) -> dict[str, Any] | None:
        self._check(url)
        with self.lock:
            found = self.topics.get(url, {}).get(topic)
            return dict(found) if found else None

    async def upsert_topic(self, url: str, cfg: TopicConfig) -> dict[str, Any]:
        self._check(url)
        with self.lock:
            obj = cfg.to_json()
            self.topics.setdefault(url, {})[cfg.topic_name] = obj
            return dict(obj)

    async def delete_topic(self, url: str, topic: str) -> bool:
        self._check(url)
        with self.lock:
            return self.topics.get(url, {}).pop(topic, None) is not None

    async def set_write_permission(self, url: str, writable: bool) -> int:
        self._check(url)
        with self.lock:
            self.writable[url] = writable
            self.permission_calls.append((url, writable))
        return 6 if writable else 4

    async def consumer_lag(self, url: str) -> list[dict[str, Any]]:
        self._check(url)
        with self.lock:
            return [dict(t) for t in self.lag.get(url, [])]

    async def group_offsets(self, url: str, group: str) -> dict[str, Any] | None:
        self._check(url)
        with self.lock:
            found = self.offsets.get(url, {}).get(group)
            return dict(found) if found is not None else None

    async def upsert_group(self, url: str, config: dict[str, Any]) -> dict[str, Any]:
        self._check(url)
        with self.lock:
            self.groups.setdefault(url, {})[str(config["groupName"])] = dict(config)
            return dict(config)

    async def delete_group(self, url: str, group: str) -> bool:
        self._check(url)
        with self.lock:
            return self.groups.get(url, {}).pop(group, None) is not None


class FakeResolver:
    def admin_url(self, group: Mapping[str, Any], ordinal: int) -> str | None:
        md = meta(group)
        return f"fake://{md['namespace']}/{md['name']}/{ordinal}"


FAST = OperatorConfig(
    resync_interval=1.0,
    status_interval=1.0,
    admin_timeout=2.0,
    retry_base_delay=0.3,
    retry_max_delay=2.0,
    master_write_grace=0.0,
)


# --- kopf in a thread -------------------------------------------------------------------------------


class OperatorThread:
    """kopf with a fresh registry in its own thread and loop, pointed at `url`."""

    def __init__(self, url: str, ctx: OperatorContext, namespaces: list[str] | None = None) -> None:
        self.url = url
        self.ctx = ctx
        self.namespaces = namespaces
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="kopf-test", daemon=True)

    def _main(self) -> None:
        registry = kopf.OperatorRegistry()
        register(registry, self.ctx.config)

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=self.url, default_namespace="default")

        settings = kopf.OperatorSettings()
        settings.watching.server_timeout = 10
        settings.watching.reconnect_backoff = 0.2
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    settings=settings,
                    clusterwide=not self.namespaces,
                    namespaces=self.namespaces or (),
                    standalone=True,
                    stop_flag=self.stop_flag,
                    memo=kopf.Memo(ctx=self.ctx),
                )
            )
        except BaseException as e:  # noqa: BLE001 - reported to the test
            self.error = e

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(15)


@contextlib.asynccontextmanager
async def running_operator(
    k: kmock.KubernetesEmulator,
    *,
    resolver: Any = None,
    admin: Any = None,
    config: OperatorConfig = FAST,
    namespaces: list[str] | None = None,
):
    url = str(k.url).rstrip("/") if hasattr(k, "url") else None
    if url is None:
        raise RuntimeError("emulator has no URL")
    ctx = OperatorContext(
        credentials=lambda: Credentials(server=url),
        config=config,
        resolver=resolver or FakeResolver(),
        admin=admin,
    )
    op = OperatorThread(url, ctx, namespaces)
    op.start()
    await wait_for(
        lambda: all(len(k[kmock.action.WATCH, k.resource(r)]) > 0 for r in WATCHED) or op.error,
        timeout=20,
        what="kopf to start watching",
    )
    if op.error:
        raise op.error
    await asyncio.sleep(0.2)
    try:
        yield op
    finally:
        op.stop()
        logging.getLogger(__name__).debug("operator thread stopped: alive=%s", op.thread.is_alive())
