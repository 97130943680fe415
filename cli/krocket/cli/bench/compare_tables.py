"""The Markdown of ``krocket bench compare``: the tables of medians and verdicts, and their section of the doc."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from krocket.cli.bench.compare_rows import Row
from krocket.cli.bench.compare_verdicts import PEER_CLASS, best_peer, medians, peer_medians, target_met, verdict
from krocket.cli.bench.system import machine_description

BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"


def _fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v / 1000:.1f} k/s"


def _fmt_us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} us"


def _fmt_cpu(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} us"


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
    figure = f"{_fmt_rate(m['produce'])}, p99 {_fmt_us(m['p99'])}"
    if row.broker_cpu_us is not None:
        figure += f", broker CPU {_fmt_cpu(m['broker_cpu'])}/send"
    return figure


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
    async_batch = medians(k_runs[reference])["produce"] if k_runs.get(reference) else None
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
        m = medians(rs)
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
            f"{target_met(row, m, async_batch, pmed)} |"
        )
    out += [
        "",
        "### Every krocket row (medians)",
        "",
        "| row | runs | produce | p50 | p99 | broker CPU / send | consume | e2e p50 / p99 / p999 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        rs = k_runs.get(row.key, [])
        if not rs:
            continue
        m = medians(rs)
        e2e = (
            f"{_fmt_us(m['e2e_p50'])} / {_fmt_us(m['e2e_p99'])} / {_fmt_us(m['e2e_p999'])}"
            if m["e2e_p50"] is not None
            else "-"
        )
        out.append(
            f"| {row.key} | {m['runs']} | {_fmt_rate(m['produce'])} | {_fmt_us(m['p50'])} | "
            f"{_fmt_us(m['p99'])} | {_fmt_cpu(m['broker_cpu'])} | {_fmt_rate(m['consume'])} | {e2e} |"
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
