"""`krocket bench`: producer/consumer benchmarks shaped like the peer kit."""

from krocket.cli.bench.command import register

__all__ = ["register"]
