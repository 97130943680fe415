"""``krocket bench scale``: many topics on one broker group, measured.

A local cluster (``--namesrvs`` name servers, one broker group, ``--slave`` for a slave following the master)
is given ``--topics`` topics of ``--queues`` queues through the broker's HTTP API, one per request (or
``--batch`` per request), and then measured: create rate and latency by decile of the table's growth, the
periodic registration of the unchanged broker (bytes per name server per round, CPU per 30 s), a name server's
catch-up after a restart (one full registration), route lookup latency, broker and name server RSS per topic,
broker restart to ready, and the slave's copy of the table. One JSON line on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from krocket.cli.arg_types import positive_int
from krocket.cli.bench import scale_report as report
from krocket.cli.bench.system import cpu_seconds, rss_kib
from krocket.cli.local_cluster import ChildProcess, LocalCluster
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import ConfigError
from krocket.common.remoting import ConnectionPool, RemotingCommand
from krocket.common.topic import MAX_TOPICS_PER_BATCH

EPILOG = """\
examples:
  krocket bench scale --topics 1000
  krocket bench scale --topics 100000 --queues 8 --batch 1000 --slave
  krocket bench scale --topics 10000 --register-period-ms 5000 --lookups 5000
"""


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "scale",
        help="many topics: create latency by decile, registration bytes, route lookups, RSS, restart time",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--topics", type=positive_int, default=10_000, help="topics to create (default 10000)")
    p.add_argument("--queues", type=positive_int, default=8, help="read and write queues per topic (default 8)")
    p.add_argument(
        "--batch",
        type=positive_int,
        default=1,
        help=f"topics per create request, 1 to {MAX_TOPICS_PER_BATCH} (default 1: POST /api/v1/topics each)",
    )
    p.add_argument("--namesrvs", type=positive_int, default=2, help="name servers (default 2)")
    p.add_argument("--slave", action="store_true", help="a slave follows the master: time for it to copy the table")
    p.add_argument(
        "--register-period-ms",
        type=positive_int,
        default=5000,
        help="the broker's registerNameServerPeriod for the run (default 5000; rounds are measured, then scaled)",
    )
    p.add_argument("--lookups", type=positive_int, default=2000, help="route lookups to time (default 2000)")
    p.add_argument("--skip-restart", action="store_true", help="do not time a broker restart")
    p.add_argument("--data-dir", default=None, help="keep the cluster's data here (default: a temporary folder)")
    p.set_defaults(func=run)


def _say(message: str) -> None:
    print(f"[bench scale] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.batch > MAX_TOPICS_PER_BATCH:
        raise ConfigError(f"--batch is at most {MAX_TOPICS_PER_BATCH}, got {args.batch}")
    own_dir = args.data_dir is None
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="krocket-scale-"))
    cluster = _plan(data_dir, args)
    try:
        _say(f"starting {args.namesrvs} name server(s) and a broker group{' with a slave' if args.slave else ''}")
        cluster.start(_say)
        result = ScaleRun(cluster, args).measure()
    finally:
        cluster.stop(_say)
        if own_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps(result), flush=True)
    return 0


def _plan(data_dir: Path, args: argparse.Namespace) -> LocalCluster:
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "scale-broker.yaml"
    config.write_text(f"registerNameServerPeriod: {args.register_period_ms}\n")
    return LocalCluster.plan(
        data_dir / "cluster",
        namesrvs=args.namesrvs,
        groups=1,
        auto_create=False,
        slaves=1 if args.slave else 0,
        extra_broker_args=["--config", str(config)],
    )


class ScaleRun:
    def __init__(self, cluster: LocalCluster, args: argparse.Namespace) -> None:
        self.cluster = cluster
        self.args = args
        self.master = next(b for b in cluster.brokers if b.broker_id == 0)
        self.slave = next((b for b in cluster.brokers if b.broker_id), None)
        self.names = [f"scale-{i:06d}" for i in range(args.topics)]

    def measure(self) -> dict[str, Any]:
        args = self.args
        empty = self._rss()
        create = self._create()
        namesrv_routed_s = self._wait_routed(self.cluster.namesrvs[0], time.monotonic())
        slave = self._slave_copy(create["ended_at"]) if self.slave is not None else None
        full = self._rss()
        idle = self._idle_rounds()
        catch_up = self._namesrv_catch_up()
        lookups = asyncio.run(self._lookups())
        restart = None if args.skip_restart else self._restart()
        per_topic = {role: report.kib_per_topic(empty.get(role), full.get(role), args.topics) for role in sorted(full)}
        return {
            "system": "krocket",
            "bench": "scale",
            "topics": args.topics,
            "queues": args.queues,
            "batch": args.batch,
            "namesrvs": args.namesrvs,
            "create": {k: v for k, v in create.items() if k != "ended_at"},
            "namesrv_routes_all_after_s": namesrv_routed_s,
            "periodic_registration": idle,
            "namesrv_restart_catch_up": catch_up,
            "route_lookup": lookups,
            "rss_kib": {"empty": empty, "full": full, "per_topic": per_topic},
            "broker_restart_to_ready_s": restart,
            "slave": slave,
        }

    # -- creating ---------------------------------------------------------------------------------------
    def _create(self) -> dict[str, Any]:
        args = self.args
        conn = http.client.HTTPConnection("127.0.0.1", self.master.http_port, timeout=60)
        latencies: list[float] = []
        began = time.perf_counter()
        step = max(1, len(self.names) // 10)
        next_report = step
        done = 0
        try:
            while done < len(self.names):
                chunk = self.names[done : done + args.batch]
                started = time.perf_counter()
                if args.batch == 1:
                    _post(conn, "/api/v1/topics", self._config(chunk[0]))
                else:
                    _post(conn, "/api/v1/topics/batch", {"topics": [self._config(n) for n in chunk]})
                latencies.append(time.perf_counter() - started)
                done += len(chunk)
                if done >= next_report:
                    elapsed = time.perf_counter() - began
                    _say(f"created {done}/{len(self.names)} topics ({done / elapsed:.0f}/s)")
                    next_report += step
        finally:
            conn.close()
        secs = time.perf_counter() - began
        deciles = report.by_decile(latencies)
        return {
            "secs": round(secs, 2),
            "topics_per_s": round(len(self.names) / secs) if secs > 0 else 0,
            "request_latency": report.latency(latencies),
            "p50_by_decile_us": [d["p50_us"] for d in deciles],
            "p99_by_decile_us": [d["p99_us"] for d in deciles],
            "last_over_first_decile_p50": report.growth_ratio(deciles),
            "ended_at": time.monotonic(),
        }

    def _config(self, name: str) -> dict[str, Any]:
        q = self.args.queues
        return {"topicName": name, "readQueueNums": q, "writeQueueNums": q, "perm": 6}

    def _wait_routed(self, namesrv: ChildProcess, since: float, timeout: float = 600.0) -> float:
        """Seconds from ``since`` until ``namesrv`` routes every topic of the run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if asyncio.run(_routed_count(namesrv.addr)) >= len(self.names):
                return round(time.monotonic() - since, 2)
            time.sleep(0.2)
        raise RuntimeError(f"{namesrv.name} did not route all {len(self.names)} topics within {timeout:.0f}s")

    # -- the slave -----------------------------------------------------------------------------------------
    def _slave_copy(self, created_at: float, timeout: float = 600.0) -> dict[str, Any]:
        assert self.slave is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if int(self.slave.http_json("/api/v1/broker", timeout=30).get("topics", 0)) >= len(self.names):
                return {
                    "copied_all_after_s": round(time.monotonic() - created_at, 2),
                    "rss_kib": rss_kib(self.slave.pid) if self.slave.pid else None,
                }
            time.sleep(0.2)
        raise RuntimeError(f"the slave did not copy all {len(self.names)} topics within {timeout:.0f}s")

    # -- registration ----------------------------------------------------------------------------------------
    def _stats(self) -> dict[str, int]:
        return dict(self.master.http_json("/api/v1/broker", timeout=30)["registration"])

    def _idle_rounds(self) -> dict[str, Any]:
        """Two and a half periods of an unchanged broker: what its periodic rounds send, and the CPU it and the
        name servers spend, scaled to a 30 s period."""
        period = self.args.register_period_ms / 1000.0
        window = max(2.5 * period, 3.0)
        _say(f"measuring periodic registration of the unchanged broker for {window:.0f}s")
        pids = {"broker": self.master.pid, "namesrv": self.cluster.namesrvs[0].pid}
        cpu0 = {k: cpu_seconds(p) if p else None for k, p in pids.items()}
        before, began = self._stats(), time.monotonic()
        time.sleep(window)
        after, spent = self._stats(), time.monotonic() - began
        cpu1 = {k: cpu_seconds(p) if p else None for k, p in pids.items()}
        rounds = report.per_round(before, after, len(self.cluster.namesrvs))
        for role in pids:
            a, b = cpu0[role], cpu1[role]
            rounds[f"{role}_cpu_s_per_30s"] = report.cpu_per_30s(
                b - a if a is not None and b is not None else None, spent
            )
        return rounds

    def _namesrv_catch_up(self) -> dict[str, Any]:
        """A name server restarted (knowing nothing): the broker's next round registers in full with it."""
        namesrv = self.cluster.namesrvs[-1]
        _say(f"restarting {namesrv.name}: the broker registers its whole table with it")
        before = self._stats()
        namesrv.stop()
        namesrv.start()
        namesrv.wait_ports()
        began = time.monotonic()
        routed = self._wait_routed(namesrv, began)
        after = self._stats()
        return {
            "routes_all_after_s": routed,
            "full_registration_bytes": after["sentBytes"] - before["sentBytes"],
            "full_registrations": after["fullRegistrations"] - before["fullRegistrations"],
        }

    # -- lookups, RSS, restart ------------------------------------------------------------------------------
    async def _lookups(self) -> dict[str, Any]:
        pool = ConnectionPool()
        addr = self.cluster.namesrvs[0].addr
        picks = [random.choice(self.names) for _ in range(self.args.lookups)]
        latencies = []
        try:
            for topic in picks:
                started = time.perf_counter()
                response = await pool.request(
                    addr, RemotingCommand(RequestCode.GET_ROUTEINFO_BY_TOPIC, ext_fields={"topic": topic}), 5.0
                )
                latencies.append(time.perf_counter() - started)
                if response.code != ResponseCode.SUCCESS:
                    raise RuntimeError(f"no route for {topic}: {response.remark}")
        finally:
            await pool.close()
        return report.latency(latencies)

    def _rss(self) -> dict[str, int]:
        out = {}
        for child in [self.master, *self.cluster.namesrvs[:1]]:
            value = rss_kib(child.pid) if child.pid else None
            if value is not None:
                out["broker" if child.role == "broker" else "namesrv"] = value
        return out

    def _restart(self) -> float:
        _say(f"restarting the master with {len(self.names)} topics")
        self.master.stop()
        began = time.monotonic()
        self.master.start()
        self.master.wait_ports(timeout=600)
        deadline = began + 600
        while time.monotonic() < deadline:
            try:
                status = int(self.master.http_json("/api/v1/broker", timeout=30).get("topics", 0))
                if status >= len(self.names) and self.cluster.is_registered(self.master):
                    return round(time.monotonic() - began, 2)
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the restarted master was not ready within 600 s")


def _post(conn: http.client.HTTPConnection, path: str, body: Any) -> None:
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"POST {path} answered {response.status}: {data[:300].decode(errors='replace')}")


async def _routed_count(addr: str) -> int:
    pool = ConnectionPool()
    try:
        response = await pool.request(addr, RemotingCommand(RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER), 30.0)
        if response.code != ResponseCode.SUCCESS:
            return 0
        return sum(1 for t in json.loads(response.body or b"{}").get("topicList", []) if t.startswith("scale-"))
    except OSError:
        return 0
    finally:
        await pool.close()
