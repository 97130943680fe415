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
from pathlib import Path
from typing import Any

from krocket.cli.arg_types import non_negative_float, positive_int
from krocket.cli.bench.compare_rows import Row, default_rows
from krocket.cli.bench.compare_tables import render, write_section
from krocket.common.errors import ConfigError

PEERS_SCRIPT_ENV = "KROCKET_PEERS_SCRIPT"
DEFAULT_DOC = Path("docs") / "performance.md"  # relative to the working directory: the repository root


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
    p.add_argument(
        "--rounds", type=positive_int, default=3, help="rounds of peers + krocket (default 3; medians over them)"
    )
    p.add_argument(
        "--n", type=positive_int, default=200_000, help="messages per run, peers and krocket (default 200000)"
    )
    p.add_argument("--budget", type=positive_int, default=45, help="produce time budget per run, seconds (default 45)")
    p.add_argument("--quick", action="store_true", help="small N and a 5 s budget on both sides: a smoke run")
    p.add_argument(
        "--backlog", type=positive_int, default=1_000_000, help="messages of the backlog row (default 1000000)"
    )
    p.add_argument(
        "--rate", type=non_negative_float, default=20_000, help="offered rate of the e2e row (default 20000)"
    )
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


def run_collect(
    cmd: list[str], timeout: float, cwd: str | None = None, env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    _log("$ " + "".join(f"{k}={v} " for k, v in (env or {}).items()) + shlex.join(cmd))
    try:
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
            env={**os.environ, **env} if env else None,
        )
    except subprocess.TimeoutExpired as exc:
        _log(f"timed out after {timeout:.0f}s")
        return _json_lines(exc.stdout or "") if isinstance(exc.stdout, str) else []
    if proc.returncode != 0:
        _log(f"exit code {proc.returncode}")
    return _json_lines(proc.stdout)


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
            commands += [
                "".join(f"{k}={v} " for k, v in r.env.items()) + shlex.join(["krocket", *krocket_command(r, args)[3:]])
                for r in rows
            ]
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
                    for r in run_collect(krocket_command(row, args), timeout=1800, env=row.env):
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
