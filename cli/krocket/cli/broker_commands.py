"""``krocket broker status|config get|config set|wipe-write-perm|add-write-perm`` (mqadmin's brokerStatus,
getBrokerConfig, updateBrokerConfig, wipeWritePerm, addWritePerm)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from krocket.cli.admin_commands import _namesrv_arg, _print, _with_admin
from krocket.cli.exit_codes import EXIT_OK, exits_1_on_failure
from krocket.common.errors import ConfigError, KrocketError

CONFIG_SET_EPILOG = """\
Only settings the broker reads at each use change at run time (longPollingEnable, shortPollingTimeMills,
transactionTimeOut, transactionCheckMax, transactionCheckInterval); others are refused with that list. A change
lasts until the broker restarts: it is not written to the broker's config file.
exit codes: 0 applied on every broker named; 1 refused or failed; 2 bad arguments
"""


def register(sub: Any) -> None:
    """Verbs under ``krocket broker``: that parser runs a broker (server_commands) when no verb follows, so the
    verbs are an optional subcommand of it; registered after server_commands."""
    broker = sub.choices.get("broker") or sub.add_parser("broker", help="a broker's status and config")
    # The broker's flags are read across the whole command line before a verb takes the rest: with abbreviations,
    # a verb's --broker or --tls would be an ambiguous prefix of --broker-name or --tls-mode there.
    broker.allow_abbrev = False
    verbs = broker.add_subparsers(
        dest="verb",
        metavar="VERB",
        required=False,
        title="admin verbs (without one, `krocket broker` runs a broker)",
    )
    p = verbs.add_parser("status", help="the broker's runtime table (brokerStatus)")
    _namesrv_arg(p)
    _target_args(p)
    p.set_defaults(func=broker_status)

    config = verbs.add_parser("config", help="get or set a broker's settings")
    cverbs = config.add_subparsers(dest="config_verb", metavar="VERB", required=True)
    p = cverbs.add_parser("get", help="every setting of the broker (getBrokerConfig)")
    _namesrv_arg(p)
    _target_args(p)
    p.add_argument("--key", "-k", action="append", default=None, help="only this setting (repeatable)")
    p.set_defaults(func=broker_config_get)
    p = cverbs.add_parser(
        "set",
        help="change a setting at run time (updateBrokerConfig)",
        epilog=CONFIG_SET_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _namesrv_arg(p)
    p.add_argument("key")
    p.add_argument("value")
    p.add_argument("--addr", default=None, help="one broker at host:port")
    p.add_argument("--broker", "-b", default=None, help="every broker of this broker group (master and slaves)")
    p.add_argument("--cluster", "-c", default=None, help="every broker of this cluster (default: all brokers)")
    p.set_defaults(func=broker_config_set)

    for verb, what in (("wipe-write-perm", "stop"), ("add-write-perm", "resume")):
        p = verbs.add_parser(
            verb,
            help=f"producers {what} sending to a broker group (on every name server; {verb.replace('-', ' ')})",
        )
        _namesrv_arg(p)
        p.add_argument("broker_name", metavar="NAME")
        p.set_defaults(func=broker_write_perm)


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("addr", nargs="?", default=None, help="the broker's host:port")
    p.add_argument("--broker", "-b", default=None, help="a broker group: each of its brokers")


async def _targets(admin: Any, args: argparse.Namespace) -> dict[str, str]:
    """label (brokerName/brokerId) -> address of the brokers the arguments name."""
    addr, group = getattr(args, "addr", None), getattr(args, "broker", None)
    cluster = getattr(args, "cluster", None)
    if addr and group:
        raise ConfigError("name a broker by ADDR or by --broker NAME, not both")
    info = await admin.cluster_info()
    labels = {a: f"{name}/{bid}" for name, b in info.brokers.items() for bid, a in b.broker_addrs.items()}
    if addr:
        return {labels.get(addr, addr): addr}
    if group:
        data = info.brokers.get(group)
        if data is None:
            raise KrocketError(
                f"broker {group!r} is unknown to the name servers; known: {', '.join(sorted(info.brokers))}"
            )
        return {f"{group}/{bid}": a for bid, a in sorted(data.broker_addrs.items())}
    if cluster is None and args.func is not broker_config_set:
        raise ConfigError("name the broker: ADDR or --broker NAME")
    names = info.clusters.get(cluster, []) if cluster else sorted(info.brokers)
    if cluster and not names:
        raise KrocketError(f"cluster {cluster!r} is unknown; known: {', '.join(sorted(info.clusters))}")
    return {f"{name}/{bid}": a for name in names for bid, a in sorted(info.brokers[name].broker_addrs.items())}


@exits_1_on_failure
def broker_status(args: argparse.Namespace) -> int:
    async def run(admin: Any) -> dict[str, dict[str, str]]:
        targets = await _targets(admin, args)
        tables = await asyncio.gather(*(admin.broker_runtime_info(a) for a in targets.values()))
        return {label: {**t, "brokerAddr": a} for (label, a), t in zip(targets.items(), tables, strict=True)}

    data = asyncio.run(_with_admin(args, run))
    lines: list[str] = []
    for label, table in data.items():
        lines.append(f"{label} ({table['brokerAddr']})")
        lines += [f"  {k:36} : {v}" for k, v in sorted(table.items())]
    _print(args, data, lines)
    return EXIT_OK


@exits_1_on_failure
def broker_config_get(args: argparse.Namespace) -> int:
    from krocket.client.admin_inspect import broker_config

    async def run(admin: Any) -> dict[str, dict[str, str]]:
        targets = await _targets(admin, args)
        configs = await asyncio.gather(*(broker_config(admin, a) for a in targets.values()))
        return dict(zip(targets, configs, strict=True))

    data = asyncio.run(_with_admin(args, run))
    if args.key:
        missing = sorted({k for k in args.key for c in data.values() if k not in c})
        if missing:
            raise KrocketError(f"no such setting: {', '.join(missing)}")
        data = {label: {k: c[k] for k in args.key} for label, c in data.items()}
    lines: list[str] = []
    for label, config in data.items():
        lines.append(f"{label}")
        lines += [f"  {k:36} = {v}" for k, v in config.items()]
    _print(args, data, lines)
    return EXIT_OK


@exits_1_on_failure
def broker_config_set(args: argparse.Namespace) -> int:
    from krocket.client.admin_inspect import update_broker_config

    async def run(admin: Any) -> dict[str, str]:
        targets = await _targets(admin, args)
        return dict(await update_broker_config(admin, targets, {args.key: args.value}))

    applied = asyncio.run(_with_admin(args, run))
    _print(
        args,
        {"key": args.key, "value": args.value, "brokers": sorted(applied)},
        [f"{label}: {answer or 'updated'}" for label, answer in sorted(applied.items())],
    )
    return EXIT_OK


@exits_1_on_failure
def broker_write_perm(args: argparse.Namespace) -> int:
    from krocket.client.admin_inspect import add_write_perm, wipe_write_perm

    wipe = args.verb == "wipe-write-perm"
    call = wipe_write_perm if wipe else add_write_perm
    counts = asyncio.run(_with_admin(args, lambda a: call(a, args.broker_name)))
    key = "wipeTopicCount" if wipe else "addTopicCount"
    what = "wiped" if wipe else "added"
    _print(
        args,
        {"brokerName": args.broker_name, "namesrv": [{"namesrvAddr": n, key: c} for n, c in sorted(counts.items())]},
        [f"{n}: write permission of {args.broker_name} {what} on {c} topic(s)" for n, c in sorted(counts.items())],
    )
    return EXIT_OK
