"""Store micro-benchmark (not a test): append N messages, read them back, print rates and RSS.

python -m krocket.broker.store.bench_store --messages 1000000 --size 1024
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from krocket.broker.store.config import StoreConfig
from krocket.broker.store.message_store import MessageStore
from krocket.common.message import PROPERTY_TAGS, PROPERTY_UNIQ_KEY


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def run(args: argparse.Namespace, root: Path) -> None:
    cfg = StoreConfig(root, flush_mode=args.flush_mode, commitlog_segment_bytes=args.segment_mib * 1024 * 1024)
    store = MessageStore(cfg).open()
    store.start_background()
    uniq_prefix = os.urandom(6).hex().upper()  # producers make unique ids; keep that cost out
    body = os.urandom(args.size)
    queues = args.queues
    rss0 = rss_mib()
    print(f"RSS after open: {rss0:.1f} MiB")
    n = args.messages
    t0 = time.perf_counter()
    c0 = time.process_time()
    i = 0
    put = store.put_message
    while i < n:
        if args.batch > 1:
            items = [
                (body, {PROPERTY_TAGS: "TagA", PROPERTY_UNIQ_KEY: f"{uniq_prefix}{i + k:020X}"}, 0)
                for k in range(min(args.batch, n - i))
            ]
            results = store.put_messages("BenchTopic", i % queues, items)
            i += len(items)
            last_end = results[-1].end_offset
        else:
            for _ in range(min(1000, n - i)):
                props = {PROPERTY_TAGS: "TagA", PROPERTY_UNIQ_KEY: f"{uniq_prefix}{i:020X}"} if args.props else {}
                last_end = put("BenchTopic", i % queues, body, props).end_offset
                i += 1
        if args.flush_mode == "SYNC_FLUSH":
            await store.wait_flushed(last_end)
        else:
            await asyncio.sleep(0)  # let the loop write out and flush, as a broker would
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    rss1 = rss_mib()
    print(
        f"appended {n} x {args.size} B ({args.flush_mode}, batch {args.batch}, {queues} queues): "
        f"{n / elapsed:,.0f} msgs/s wall, {n / cpu:,.0f} msgs/s per CPU second of this process, "
        f"{n * args.size / elapsed / 2**20:,.1f} MiB/s"
    )
    print(f"RSS before: {rss0:.1f} MiB, after {n} appends: {rss1:.1f} MiB (+{rss1 - rss0:.1f})")

    t0 = time.perf_counter()
    got = 0
    for q in range(queues):
        off = 0
        while True:
            r = store.get_messages("BenchTopic", q, off, max_msgs=32)
            if not r.count:
                break
            got += r.count
            off = r.next_begin_offset
    elapsed = time.perf_counter() - t0
    rss2 = rss_mib()
    print(f"read back {got} messages (pulls of 32): {got / elapsed:,.0f} msgs/s; RSS after reads: {rss2:.1f} MiB")
    await store.stop_background()
    t0 = time.perf_counter()
    store.close()
    print(f"close (final flush) took {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    store = MessageStore(cfg).open()
    print(
        f"reopen (clean recovery of the last segments) took {time.perf_counter() - t0:.2f} s; RSS {rss_mib():.1f} MiB"
    )
    store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--queues", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--no-props", dest="props", action="store_false", help="messages without TAGS/UNIQ_KEY")
    p.add_argument("--flush-mode", default="ASYNC_FLUSH", choices=["ASYNC_FLUSH", "SYNC_FLUSH"])
    p.add_argument("--segment-mib", type=int, default=1024)
    p.add_argument("--dir", help="store directory (default: a temporary one, removed afterwards)")
    args = p.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="krocket-bench-"))
    try:
        asyncio.run(run(args, root))
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
