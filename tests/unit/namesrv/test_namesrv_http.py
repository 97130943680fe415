"""The name server's aiohttp app, driven in process with aiohttp's test client."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from krocket.common.topic import TopicConfig
from krocket.namesrv.http import create_app
from krocket.namesrv.metrics import NAMESRV_METRICS, NamesrvMetrics
from krocket.namesrv.registry import Registration, RouteRegistry


async def test_http_endpoints() -> None:
    now = [100.0]
    registry = RouteRegistry(clock=lambda: now[0])
    registry.register(
        Registration(
            "c1",
            "broker-a",
            0,
            "10.0.0.1:10911",
            "10.0.0.1:10912",
            {"T": TopicConfig("T", 2, 2)},
            None,
            1,
            http_url="http://10.0.0.1:10913",
            grpc_addr="10.0.0.1:8081",
        )
    )
    now[0] += 5
    metrics = NamesrvMetrics()
    metrics.count_request(105)
    metrics.count_request(105)
    metrics.count_request(999)
    ready = [False]
    async with TestClient(TestServer(create_app(registry, metrics, lambda: ready[0]))) as client:
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 503
        ready[0] = True
        assert (await client.get("/readyz")).status == 200

        resp = await client.get("/metrics")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
        assert families["krocket_namesrv_brokers"].type == "gauge"
        assert [s.value for s in families["krocket_namesrv_brokers"].samples] == [1.0]
        assert [s.value for s in families["krocket_namesrv_topics"].samples] == [1.0]
        requests = families["krocket_namesrv_requests"]
        assert requests.type == "counter"
        assert {(s.labels["code"], s.labels["name"]): s.value for s in requests.samples} == {
            ("105", "GET_ROUTEINFO_BY_TOPIC"): 2.0,
            ("999", "UNKNOWN"): 1.0,
        }
        broker = {"cluster": "c1", "broker": "broker-a", "broker_id": "0"}
        age = families["krocket_namesrv_broker_registration_age_seconds"].samples
        assert [(s.labels, s.value) for s in age] == [(broker, 5.0)]
        assert [(s.labels, s.value) for s in families["krocket_namesrv_cluster_brokers"].samples] == [
            ({"cluster": "c1"}, 1.0)
        ]
        assert [(s.labels, s.value) for s in families["krocket_namesrv_broker_topics"].samples] == [
            ({"broker": "broker-a"}, 1.0)
        ]
        assert {n: f.type for n, f in families.items()} == {
            f"krocket_{n}".removesuffix("_total"): kind for n, kind in NAMESRV_METRICS.items()
        }

        cluster = await (await client.get("/api/v1/cluster")).json()
        assert cluster["clusterAddrTable"] == {"c1": ["broker-a"]}
        assert cluster["brokerAddrTable"]["broker-a"]["brokerAddrs"] == {"0": "10.0.0.1:10911"}
        assert cluster["brokerAddrTable"]["broker-a"]["grpcAddrs"] == {"0": "10.0.0.1:8081"}
        assert cluster["brokers"] == [
            {
                "cluster": "c1",
                "brokerName": "broker-a",
                "brokerId": 0,
                "addr": "10.0.0.1:10911",
                "haServerAddr": "10.0.0.1:10912",
                "httpUrl": "http://10.0.0.1:10913",
                "grpcAddr": "10.0.0.1:8081",
                "lastUpdateAgeSeconds": 5.0,
            }
        ]

        assert await (await client.get("/api/v1/topics")).json() == {"topicList": ["T"]}
        route = await (await client.get("/api/v1/topics/T/route")).json()
        assert route["brokerDatas"][0]["brokerAddrs"] == {"0": "10.0.0.1:10911"}
        assert route["brokerDatas"][0]["grpcAddrs"] == {"0": "10.0.0.1:8081"}
        missing = await client.get("/api/v1/topics/Nope/route")
        assert missing.status == 404 and "error" in await missing.json()
