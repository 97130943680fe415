"""The options of one ``krocket bench`` run (produce, consume or e2e) and the limits every run keeps to."""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("seq", "window", "batch")
VERBS = ("produce", "consume", "e2e")
DEFAULT_WINDOW = {"seq": 1, "window": 256, "batch": 4}
MAX_ERRORS = 100  # a run gives up after this many failed sends or pulls


@dataclass
class BenchOptions:
    verb: str = "produce"
    mode: str = "seq"
    size: int = 1024
    n: int = 200_000
    duration: float = 45.0
    window: int | None = None
    batch: int = 100
    flush: str = "async"
    replication: str = "async"
    producers: int = 1
    consumers: int = 1
    rate: float = 20_000.0
    pin: bool = False
    queues: int = 4
    pull_batch: int = 1024
    commit_every: int = 10_000
    consume_budget: float | None = None
    backlog: int | None = None
    loop: str = "asyncio"
    client: str = "async"  # "sync": one-at-a-time sends on a thread over blocking sockets (SyncProducer's path)
    idle_spin_micros: int = 0  # the --local broker's idleSpinMicros (krocket.common.remoting.idle_spin)

    @property
    def broker_args(self) -> list[str]:
        """``krocket broker`` flags of the --local cluster's brokers."""
        return ["--idle-spin-micros", str(self.idle_spin_micros)] if self.idle_spin_micros else []

    @property
    def inflight(self) -> int:
        """Requests in flight per producer: 1 for seq, ``--window`` otherwise."""
        if self.mode == "seq":
            return 1
        return max(1, self.window or DEFAULT_WINDOW[self.mode])

    @property
    def msgs_per_request(self) -> int:
        return self.batch if self.mode == "batch" else 1

    @property
    def window_msgs(self) -> int:
        """Messages in flight at most (the peer kit's ``window``)."""
        return self.inflight * self.msgs_per_request * max(1, self.producers)

    @property
    def consume_limit_s(self) -> float:
        return self.consume_budget if self.consume_budget is not None else self.duration * 2 + 20
