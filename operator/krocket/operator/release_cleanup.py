"""Delete the krocket resources a Helm release created, and wait until they are gone, while the operator runs.

The chart's ``pre-delete`` hook Job runs this (``python -m krocket.operator.release_cleanup``) before Helm
deletes the release's objects: a Topic has the operator's finalizer, and when Helm deleted the operator
Deployment first, nothing would ever remove it (the Topic stuck Terminating, its namespace with it). Topics go
first (their brokers must still run to delete the topic from them), then BrokerGroups, then NameServerSets; each
step waits until the operator has finished with every resource of that kind.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence

from krocket.operator.kube import BROKERGROUPS, NAMESERVERSETS, TOPICS, Credentials, Kind, KubeClient

log = logging.getLogger(__name__)

# Deletion order: a Topic's finalizer needs its brokers, a BrokerGroup's name servers outlive it.
DELETION_ORDER: tuple[Kind, ...] = (TOPICS, BROKERGROUPS, NAMESERVERSETS)
RELEASE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"


class CleanupTimeout(Exception):
    """Resources were still there at the deadline (the operator is not running, or refuses to let go)."""


def release_labels(release: str) -> dict[str, str]:
    return {RELEASE_LABEL: release, MANAGED_BY_LABEL: "Helm"}


async def _names(client: KubeClient, kind: Kind, namespace: str, release: str) -> list[str]:
    items = await client.list(kind, namespace, release_labels(release))
    return sorted(str(i["metadata"]["name"]) for i in items)


async def remove_release_resources(
    client: KubeClient, namespace: str, release: str, *, timeout: float, poll: float = 2.0
) -> list[str]:
    """Delete the release's Topics, BrokerGroups and NameServerSets in ``namespace``, kind by kind, waiting
    after each kind until none is left. Returns what was deleted ("Kind/name"); raises CleanupTimeout."""
    deadline = time.monotonic() + timeout
    deleted: list[str] = []
    for kind in DELETION_ORDER:
        names = await _names(client, kind, namespace, release)
        for name in names:
            log.info("deleting %s %s/%s", kind.kind, namespace, name)
            await client.delete(kind, namespace, name)
            deleted.append(f"{kind.kind}/{name}")
        while remaining := await _names(client, kind, namespace, release):
            if time.monotonic() >= deadline:
                raise CleanupTimeout(
                    f"{kind.kind} still present after {timeout:.0f}s: {', '.join(remaining)} (is the operator "
                    "running? kubectl describe shows its conditions and events)"
                )
            await asyncio.sleep(poll)
    return deleted


async def _main(args: argparse.Namespace) -> int:
    creds = Credentials.in_cluster() if args.server is None else Credentials(server=args.server)
    if creds is None:
        print("no in-cluster service account; give --server", file=sys.stderr)
        return 2
    client = KubeClient(creds)
    try:
        deleted = await remove_release_resources(client, args.namespace, args.release, timeout=args.timeout)
    except CleanupTimeout as exc:
        print(f"cleanup incomplete: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    print(f"deleted {len(deleted)} resource(s): {', '.join(deleted) or 'none'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m krocket.operator.release_cleanup", description=__doc__)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--release", required=True, help="Helm release name (label app.kubernetes.io/instance)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default 300)")
    parser.add_argument("--server", default=None, help="API server URL (default: the pod's service account)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
