"""``krocket bench compare``: the peer kit and krocket's matching modes, N rounds, medians and verdicts.

Each round runs the peer kit's ``run.sh`` (Redis Streams, NATS JetStream, RabbitMQ; ``--peers-script`` or
``$KROCKET_PEERS_SCRIPT``, a separate checkout: it is not part of this repository) and then every krocket
row below against its own pinned ``--local`` cluster. The medians over the rounds go into a Markdown section of
``docs/performance.md`` (between the ``compare:begin``/``compare:end`` markers; the rest of the file is kept),
with the verdict per row: **ahead** = at least 1.2x the best peer of the same durability class with a p99 no
worse; async-flush krocket is compared with the better of Redis and NATS, sync-flush krocket with RabbitMQ.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krocket.cli.bench.stats import median_of
from krocket.cli.bench.system import machine_description
from krocket.common.errors import ConfigError

PEERS_SCRIPT_ENV = "KROCKET_PEERS_SCRIPT"
DEFAULT_DOC = Path("docs") / "performance.md"  # relative to the working directory: the repository root
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"
AHEAD_FACTOR = 1.2
PEER_CLASS = {"redis": "async", "nats": "async", "rabbit": "sync", "rabbit-quorum": "sync", "rabbit-aiormq": "sync"}


@dataclass
class Row:
    key: str
    title: str
    args: list[str]
    durability: str | None  # "async" | "sync" | None (no peer figure to compare with)
    peer_mode: str | None  # peer kit mode to compare with ("seq" | "batch"); "consume" = consume rates
    target: str
    metric: str = "produce"  # which krocket figure is the row's rate: "produce" | "consume"
    extra_runs: list[dict[str, Any]] = field(default_factory=list)


def default_rows(backlog: int, rate: float) -> list[Row]:
    return [
        Row(
            "seq-async",
            "one-at-a-time acked send, async flush",
            ["produce", "--mode", "seq"],
            "async",
            "seq",
            ">= 8.3 k/s, p99 <= 400 us",
        ),
        Row(
            "seq-sync",
            "one-at-a-time acked send, SYNC_FLUSH",
            ["produce", "--mode", "seq", "--flush", "sync"],
            "sync",
            "seq",
            ">= 3 k/s, p99 <= 1 ms",
        ),
        Row(
            "window-async",
            "pipelined send (window 256), async flush",
            ["produce", "--mode", "window"],
            "async",
            "batch",
            ">= 90 k/s, p99 <= 10 ms",
        ),
        Row(
            "batch-async",
            "batched send (100 x 4 in flight), async flush",
            ["produce", "--mode", "batch"],
            "async",
            "batch",
            ">= 90 k/s, p99 <= 10 ms",
        ),
        Row(
            "batch-sync",
            "batched send (100 x 4 in flight), SYNC_FLUSH",
            ["produce", "--mode", "batch", "--flush", "sync"],
            "sync",
            "batch",
            ">= 50 k/s",
        ),
        Row(
            "batch-async-master",
            "batched send, async flush, ASYNC_MASTER with 1 slave",
            ["produce", "--mode", "batch", "--replication", "async", "--slaves", "1"],
            None,
            None,
            "- (what the SYNC_MASTER row is held against)",
        ),
        Row(
            "batch-sync-master",
            "batched send, async flush, SYNC_MASTER with 1 slave",
            ["produce", "--mode", "batch", "--replication", "sync", "--slaves", "1"],
            None,
            None,
            ">= 0.7 of the ASYNC_MASTER (1 slave) batch rate",
        ),
        Row(
            "consume",
            "consume a backlog (pull, offsets committed)",
            ["consume"],
            "async",
            "consume",
            ">= 150 k/s",
            metric="consume",
        ),
        Row(
            "produce+consume",
            "produce and consume at once (batch, unthrottled)",
            ["e2e", "--mode", "batch", "--rate", "0"],
            None,
            None,
            ">= 60 k in + 60 k out",
        ),
        Row(
            "e2e",
            f"end-to-end latency at {rate / 1000:g} k/s offered (batches of 10)",
            ["e2e", "--mode", "batch", "--batch", "10", "--rate", f"{rate:g}"],
            None,
            None,
            "p50 <= 1 ms, p99 <= 5 ms",
        ),
        Row(
            "backlog",
            f"broker RSS with a {backlog:,} message backlog",
            ["backlog", "--backlog", str(backlog)],
            None,
            None,
            "RSS within 10 % of empty",
        ),
    ]


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "compare",
        help="run the peer kit and krocket's matching modes, write medians and verdicts to docs/performance.md",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--peers-script",
        default=os.environ.get(PEERS_SCRIPT_ENV),
        help=f"the peer kit's run.sh (default ${PEERS_SCRIPT_ENV}); not needed with --peers none",
    )
    p.add_argument(
        "--peers",
        default="all",
        choices=["all", "redis", "nats", "rabbit", "none"],
        help="peers to run (none: krocket only)",
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds of peers + krocket (default 3; medians over them)")
    p.add_argument("--n", type=int, default=200_000, help="messages per run, peers and krocket (default 200000)")
    p.add_argument("--budget", type=int, default=45, help="produce time budget per run, seconds (default 45)")
    p.add_argument("--quick", action="store_true", help="small N and a 5 s budget on both sides: a smoke run")
    p.add_argument("--backlog", type=int, default=1_000_000, help="messages of the backlog row (default 1000000)")
    p.add_argument("--rate", type=float, default=20_000, help="offered rate of the e2e row (default 20000)")
    p.add_argument("--only", default=None, help="comma-separated krocket rows to run (default all)")
    p.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default=argparse.SUPPRESS,
        help="event loop of krocket's clients and local clusters (default: the global --loop)",
    )
    p.add_argument("--out", default=str(DEFAULT_DOC), help=f"Markdown file to update (default {DEFAULT_DOC})")
    p.add_argument("--results", default=None, help="also append every JSON line to this file")
    p.add_argument(
        "--reuse", default=None, help="no runs: rebuild the tables from a JSON-lines file written by --results"
    )
    p.set_defaults(func=compare_main)


# ---------------------------------------------------------------------------------------------- running
def _log(message: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def peers_command(args: argparse.Namespace) -> list[str]:
    cmd = [args.peers_script, args.peers]
    cmd += ["--quick"] if args.quick else ["--n", str(args.n), "--budget", str(args.budget)]
    return cmd


def krocket_command(row: Row, args: argparse.Namespace) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "krocket.cli.main",
        "--log-level",
        "WARNING",
        "bench",
        *row.args,
        "--local",
        "--pin",
        "--json",
        "--loop",
        args.loop,
    ]
    if row.key == "backlog":
        return cmd + (["--duration", "5"] if args.quick else [])
    if args.quick:
        return cmd + ["--n", str(min(args.n, 20_000)), "--duration", "5"]
    return cmd + ["--n", str(args.n), "--duration", str(args.budget)]


def run_collect(cmd: list[str], timeout: float, cwd: str | None = None) -> list[dict[str, Any]]:
    _log("$ " + shlex.join(cmd))
    try:
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout, check=False, cwd=cwd
        )
    except subprocess.TimeoutExpired as exc:
        _log(f"timed out after {timeout:.0f}s")
        return _json_lines(exc.stdout or "") if isinstance(exc.stdout, str) else []
    if proc.returncode != 0:
        _log(f"exit code {proc.returncode}")
    return _json_lines(proc.stdout)


# ---------------------------------------------------------------------------------------------- tables
def _fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v / 1000:.1f} k/s"


def _fmt_us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} us"


def peer_medians(peer_runs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(peer, mode, loop) -> medians of produce rate/p50/p99 and consume rate, with the run count."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in peer_runs:
        groups[r["peer"], r["mode"], r.get("loop", "?")].append(r)
    return {key: _medians(rs) for key, rs in groups.items()}


def _medians(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": len(rs),
        "produce": median_of(r["produce"]["msgs_per_s"] for r in rs),
        "p50": median_of(r["produce"].get("p50_us") for r in rs),
        "p99": median_of(r["produce"].get("p99_us") for r in rs),
        "consume": median_of(r["consume"]["msgs_per_s"] for r in rs),
        "e2e_p50": median_of(r.get("e2e", {}).get("p50_us") for r in rs),
        "e2e_p99": median_of(r.get("e2e", {}).get("p99_us") for r in rs),
        "e2e_p999": median_of(r.get("e2e", {}).get("p999_us") for r in rs),
        "rss_empty": median_of(r.get("backlog", {}).get("rss_empty_kib") for r in rs),
        "rss_backlog": median_of(r.get("backlog", {}).get("rss_backlog_kib") for r in rs),
        "backlog_msgs": median_of(r.get("backlog", {}).get("msgs") for r in rs),
    }


def best_peer(
    pmed: dict[tuple[str, str, str], dict[str, Any]], durability: str, mode: str
) -> tuple[tuple[str, str, str], dict[str, Any]] | None:
    """The same-class peer setting with the highest median rate (consume: any mode's consume rate)."""
    best = None
    for key, m in pmed.items():
        if PEER_CLASS.get(key[0]) != durability:
            continue
        if mode != "consume" and key[1] != mode:
            continue
        value = m["consume"] if mode == "consume" else m["produce"]
        if value is not None and (best is None or value > best[2]):
            best = (key, m, value)
    return (best[0], best[1]) if best else None


def verdict(
    k_rate: float | None, k_p99: float | None, p_rate: float | None, p_p99: float | None, rate_only: bool = False
) -> str:
    """ahead: >= 1.2x the peer's rate with a p99 no worse; else parity (0.8-1.2x) or behind (< 0.8x)."""
    if not k_rate or not p_rate:
        return "-"
    ratio = k_rate / p_rate
    p99_ok = rate_only or k_p99 is None or p_p99 is None or k_p99 <= p_p99
    if ratio >= AHEAD_FACTOR and p99_ok:
        word = "**ahead**"
    elif ratio >= AHEAD_FACTOR:
        word = "faster, p99 worse: not ahead"
    elif ratio >= 0.8:
        word = "parity"
    else:
        word = "behind"
    return f"{word} ({ratio:.2f}x)"


def target_met(row: Row, m: dict[str, Any], async_batch_rate: float | None = None) -> str:
    """The performance target (floor) of the row: met / missed (None figures count as missed), "-" for a row
    without one. ``async_batch_rate``: the ASYNC_MASTER batch median, which the SYNC_MASTER row is held against
    (with a slave like it when that row ran, else without)."""
    if row.target.startswith("-"):
        return "-"

    def ge(v: float | None, floor: float) -> bool:
        return v is not None and v >= floor

    def le(v: float | None, ceil: float) -> bool:
        return v is not None and v <= ceil

    checks = {
        "seq-async": ge(m["produce"], 8300) and le(m["p99"], 400),
        "seq-sync": ge(m["produce"], 3000) and le(m["p99"], 1000),
        "window-async": ge(m["produce"], 90_000) and le(m["p99"], 10_000),
        "batch-async": ge(m["produce"], 90_000) and le(m["p99"], 10_000),
        "batch-sync": ge(m["produce"], 50_000),
        "batch-sync-master": async_batch_rate is not None and ge(m["produce"], 0.7 * async_batch_rate),
        "consume": ge(m["consume"], 150_000),
        "produce+consume": ge(m["produce"], 60_000) and ge(m["consume"], 60_000),
        "e2e": le(m["e2e_p50"], 1000) and le(m["e2e_p99"], 5000),
        "backlog": m["rss_empty"] is not None
        and m["rss_backlog"] is not None
        and m["rss_backlog"] <= 1.1 * m["rss_empty"],
    }
    return "met" if checks.get(row.key) else "**missed**"


def krocket_figure(row: Row, m: dict[str, Any]) -> str:
    if row.key == "produce+consume":
        return f"{_fmt_rate(m['produce'])} in, {_fmt_rate(m['consume'])} out"
    if row.key == "e2e":
        return (
            f"{_fmt_rate(m['produce'])} sent; e2e p50 {_fmt_us(m['e2e_p50'])}, p99 {_fmt_us(m['e2e_p99'])}, "
            f"p999 {_fmt_us(m['e2e_p999'])}"
        )
    if row.key == "backlog":
        if m["rss_empty"] is None or m["rss_backlog"] is None:
            return "-"
        return (
            f"{m['rss_empty'] / 1024:.0f} MiB empty, {m['rss_backlog'] / 1024:.0f} MiB with "
            f"{m['backlog_msgs']:,.0f} msgs ({m['rss_backlog'] / m['rss_empty']:.2f}x); consume "
            f"{_fmt_rate(m['consume'])}"
        )
    if row.metric == "consume":
        return _fmt_rate(m["consume"])
    return f"{_fmt_rate(m['produce'])}, p99 {_fmt_us(m['p99'])}"


def render(
    rows: list[Row],
    k_runs: dict[str, list[dict[str, Any]]],
    peer_runs: list[dict[str, Any]],
    commands: list[str],
    args: argparse.Namespace,
    started: str,
    elapsed_s: float,
) -> str:
    pmed = peer_medians(peer_runs)
    reference = "batch-async-master" if k_runs.get("batch-async-master") else "batch-async"
    async_batch = _medians(k_runs[reference])["produce"] if k_runs.get(reference) else None
    out = [
        BEGIN,
        f"## Comparison run of {started}",
        "",
        f"Machine: {machine_description()}. Broker (and name server) pinned to CPU 0, clients to CPU 1; "
        f"1 KiB messages; medians of {args.rounds} round(s); {elapsed_s / 60:.0f} min in all.",
        "",
        "| row | krocket (median) | best same-class peer (median) | verdict | target met | target |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        rs = k_runs.get(row.key, [])
        if not rs:
            out.append(f"| {row.title} | not run | - | - | {row.target} | - |")
            continue
        m = _medians(rs)
        peer_cell, verdict_cell = "-", "-"
        if row.durability and row.peer_mode:
            best = best_peer(pmed, row.durability, row.peer_mode)
            if best:
                (peer, mode, loop), pm = best
                if row.metric == "consume":
                    peer_cell = f"{peer} ({loop}): {_fmt_rate(pm['consume'])}"
                    verdict_cell = verdict(m["consume"], None, pm["consume"], None, rate_only=True)
                else:
                    peer_cell = f"{peer} {mode} ({loop}): {_fmt_rate(pm['produce'])}, p99 {_fmt_us(pm['p99'])}"
                    verdict_cell = verdict(m["produce"], m["p99"], pm["produce"], pm["p99"])
        out.append(
            f"| {row.title} | {krocket_figure(row, m)} | {peer_cell} | {verdict_cell} | {row.target} | "
            f"{target_met(row, m, async_batch)} |"
        )
    out += [
        "",
        "### Every krocket row (medians)",
        "",
        "| row | runs | produce | p50 | p99 | consume | e2e p50 / p99 / p999 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        rs = k_runs.get(row.key, [])
        if not rs:
            continue
        m = _medians(rs)
        e2e = (
            f"{_fmt_us(m['e2e_p50'])} / {_fmt_us(m['e2e_p99'])} / {_fmt_us(m['e2e_p999'])}"
            if m["e2e_p50"] is not None
            else "-"
        )
        out.append(
            f"| {row.key} | {m['runs']} | {_fmt_rate(m['produce'])} | {_fmt_us(m['p50'])} | "
            f"{_fmt_us(m['p99'])} | {_fmt_rate(m['consume'])} | {e2e} |"
        )
    if pmed:
        out += [
            "",
            "### Peers (medians, same rounds)",
            "",
            "| peer | mode | loop | runs | produce | p50 | p99 | consume |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for (peer, mode, loop), m in sorted(pmed.items()):
            out.append(
                f"| {peer} ({PEER_CLASS.get(peer, '?')} flush) | {mode} | {loop} | {m['runs']} | "
                f"{_fmt_rate(m['produce'])} | {_fmt_us(m['p50'])} | {_fmt_us(m['p99'])} | "
                f"{_fmt_rate(m['consume'])} |"
            )
    out += ["", "### Commands", "", "```", *commands, "```", "", END]
    return "\n".join(out) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the compare section of ``path`` (or append it), keeping the rest of the file."""
    text = path.read_text() if path.exists() else "# Performance\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def compare_main(args: argparse.Namespace) -> int:
    rows = default_rows(args.backlog, args.rate)
    if args.only:
        wanted = {k.strip() for k in args.only.split(",")}
        unknown = wanted - {r.key for r in rows}
        if unknown:
            raise ConfigError(f"unknown rows: {', '.join(sorted(unknown))}; known: {', '.join(r.key for r in rows)}")
        rows = [r for r in rows if r.key in wanted]
    if not args.reuse and args.peers != "none" and not args.peers_script:
        raise ConfigError(
            f"bench compare: the peer kit's run.sh is not set; pass --peers-script PATH or set {PEERS_SCRIPT_ENV} "
            "(or --peers none for krocket's rows only)"
        )
    started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.monotonic()
    peer_runs: list[dict[str, Any]] = []
    k_runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    commands: list[str] = []
    results = open(args.results, "a") if args.results else None  # noqa: SIM115 - closed below
    try:
        if args.reuse:
            for line in Path(args.reuse).read_text().splitlines():
                r = json.loads(line)
                if "peer" in r:
                    peer_runs.append(r)
                elif "row" in r:
                    k_runs[r["row"]].append(r)
            commands.append(f"(tables rebuilt from {args.reuse})")
        else:
            commands.append(
                shlex.join(["krocket", "bench", "compare", *sys.argv[sys.argv.index("compare") + 1 :]])
                if "compare" in sys.argv
                else "krocket bench compare"
            )
            commands.append("# each round runs:")
            if args.peers != "none":
                commands.append(shlex.join(peers_command(args)))
            commands += [shlex.join(["krocket", *krocket_command(r, args)[3:]]) for r in rows]
            for rnd in range(args.rounds):
                _log(f"round {rnd + 1} of {args.rounds}")
                if args.peers != "none":
                    # not from the repository root: its operator/ folder would shadow the stdlib module
                    got = run_collect(peers_command(args), timeout=3 * 3600, cwd=tempfile.gettempdir())
                    peer_runs += got
                    for r in got:
                        if results:
                            results.write(json.dumps(r) + "\n")
                for row in rows:
                    for r in run_collect(krocket_command(row, args), timeout=1800):
                        r["row"] = row.key
                        k_runs[row.key].append(r)
                        if results:
                            results.write(json.dumps(r) + "\n")
                if results:
                    results.flush()
    finally:
        if results:
            results.close()
    section = render(rows, k_runs, peer_runs, commands, args, started, time.monotonic() - t0)
    write_section(Path(args.out), section)
    print(section)
    _log(f"wrote {args.out}")
    return 0
