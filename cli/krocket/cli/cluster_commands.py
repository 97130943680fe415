"""``krocket cluster list``: clusters, broker groups, their brokers (remoting address and, when served, the 5.x
gRPC endpoint) and how each is doing (messages in and out per second over the last minute, commit log end, bytes
a slave is behind)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from krocket.cli.admin_commands import _print, _with_admin


def register(sub: Any, namesrv_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    cluster = sub.add_parser("cluster", help="cluster information")
    cverbs = cluster.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = cverbs.add_parser("list", help="list clusters, broker groups and their brokers")
    namesrv_arg(p)
    p.set_defaults(func=cluster_list)


def cluster_list(args: argparse.Namespace) -> int:
    async def run(admin: Any) -> tuple[Any, dict[str, dict[str, str]]]:
        info = await admin.cluster_info()
        addrs = [a for b in info.brokers.values() for a in b.broker_addrs.values()]
        tables = await asyncio.gather(*(admin.broker_runtime_info(a) for a in addrs), return_exceptions=True)
        return info, {a: t for a, t in zip(addrs, tables, strict=True) if isinstance(t, dict)}

    info, runtime = asyncio.run(_with_admin(args, run))
    lines = [
        f"{'CLUSTER':16} {'BROKER':12} {'ID':>3} {'ROLE':6} {'ADDRESS':22} {'GRPC':22} {'IN_TPS':>9} {'OUT_TPS':>9} "
        f"{'MAX_OFFSET':>12} {'BEHIND_BYTES':>12}"
    ]
    data: dict[str, Any] = {"clusters": {}, "brokers": {}}
    for cluster, names in sorted(info.clusters.items()):
        data["clusters"][cluster] = names
        for name in names:
            broker = info.brokers.get(name)
            addrs = broker.broker_addrs if broker else {}
            grpc_addrs = broker.grpc_addrs if broker else {}
            master_end = _int(runtime.get(addrs.get(0, ""), {}).get("commitLogMaxOffset"))
            rows = {}
            for broker_id, addr in sorted(addrs.items()):
                end = _int(runtime.get(addr, {}).get("commitLogMaxOffset"))
                behind = max(master_end - end, 0) if broker_id and master_end is not None and end is not None else None
                role = "master" if broker_id == 0 else "slave"
                table = runtime.get(addr, {})
                in_tps, out_tps = minute_tps(table.get("putTps")), minute_tps(table.get("getTransferedTps"))
                grpc_addr = grpc_addrs.get(broker_id)
                rows[str(broker_id)] = {
                    "brokerName": name,
                    "brokerId": broker_id,
                    "addr": addr,
                    "grpcAddr": grpc_addr,
                    "role": role,
                    "inTps": in_tps,
                    "outTps": out_tps,
                    "maxOffset": end,
                    "behindBytes": behind,
                }
                lines.append(
                    f"{cluster:16} {name:12} {broker_id:>3} {role:6} {addr:22} {grpc_addr or '-':22} "
                    f"{_tps(in_tps):>9} {_tps(out_tps):>9} "
                    f"{'?' if end is None else end:>12} {'-' if behind is None else behind:>12}"
                )
            data["brokers"][name] = rows
    _print(args, data, lines)
    return 0


def minute_tps(value: str | None) -> float | None:
    """The last-minute rate of a runtime table's ``putTps``/``getTransferedTps`` ("<10 s> <1 min>"; a broker
    that sends one number: that one). None when absent or not a number."""
    if not value:
        return None
    try:
        return float(value.split()[-1])
    except ValueError:
        return None


def _tps(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
