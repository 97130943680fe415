"""Prometheus metrics of one server on ``prometheus_client``: a ``CollectorRegistry`` per server whose one collector
builds every metric family at scrape time from plain counters the server already keeps.

Nothing here is called per request but ``Histogram.observe`` (a bisect and three additions, no lock: the servers
are single-threaded event loops) and the dict additions of ``Family.values``; prometheus_client's own ``Counter``
takes a lock per ``inc``. Families:

- ``counter(name, ...)``: values kept in a dict by label key (``add``/``inc``), typed counter; ``counter_fn`` and
  ``gauge_fn`` read a number or a dict of them at scrape time;
- ``histogram(name, ...)``: buckets kept by hand (``Histogram``), exported as a histogram family;
- ``collector(fn)``: ``fn`` yields ``Sampled`` families (per topic, per group: whatever is built per scrape).

Every sample carries the server's constant labels (``cluster``, ``broker``, ``broker_id`` on a broker). Names are
given without the ``krocket_`` prefix; a counter's name ends in ``_total``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from krocket.common.codes import RequestCode

CONTENT_TYPE = CONTENT_TYPE_LATEST  # text/plain; version=0.0.4 (or 1.0.0 with newer clients); charset=utf-8

LabelKey = tuple[tuple[str, str], ...]  # ((name, value), ...): the key of one series in a family
Values = dict[LabelKey, float]
Source = Callable[[], "float | Values"]

# Latency buckets in seconds, 50 us to 10 s: a send served from memory is tens of microseconds, a synced one
# milliseconds, a stalled disk seconds.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)


def request_code_name(code: int) -> str:
    """A request code's ``RequestCode`` name, ``UNKNOWN`` for a code krocket does not know."""
    try:
        return RequestCode(code).name
    except ValueError:
        return "UNKNOWN"


def request_label(code: int) -> LabelKey:
    """The label key of a request counter: the numeric code and its name."""
    return (("code", str(code)), ("name", request_code_name(code)))


def sample_names(families: Mapping[str, str], prefix: str = "krocket") -> set[str]:
    """The sample names a query can name, from families (name without the prefix -> type): a counter's with its
    ``_total``, a histogram's ``_bucket``, ``_count`` and ``_sum``."""
    out: set[str] = set()
    for name, kind in families.items():
        full = f"{prefix}_{name}"
        if kind == "histogram":
            out |= {full + "_bucket", full + "_count", full + "_sum"}
        else:
            out.add(full)
    return out


class Histogram:
    """Cumulative-on-export buckets kept by hand: ``observe`` is a bisect and three additions."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def observe_many(self, value: float, times: int) -> None:
        """``times`` observations of ``value`` (a read of ``times`` sends that took ``value`` each on average)."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times
        self.count += times

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count of observations <= le), ending with +Inf."""
        out = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append((_le(bound), running))
        return out


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


@dataclass
class Sampled:
    """A family built at scrape time: ``kind`` counter, gauge or histogram; values by label key (histograms by
    label key too)."""

    name: str
    help: str
    kind: str
    values: Values = field(default_factory=dict)
    histograms: dict[LabelKey, Histogram] = field(default_factory=dict)


@dataclass
class Family:
    """A counter family whose values the server adds to (``values[key] = values.get(key, 0.0) + n``)."""

    name: str
    help: str
    kind: str
    values: Values = field(default_factory=dict)
    source: Source | None = None
    histogram: Histogram | None = None


class Metrics:
    """One server's families and its ``CollectorRegistry``; ``render`` is what ``/metrics`` answers."""

    def __init__(self, prefix: str = "krocket", labels: dict[str, str] | None = None) -> None:
        self._prefix = prefix
        self._families: dict[str, Family] = {}
        self._collectors: list[Callable[[], Iterable[Sampled]]] = []
        self.labels: LabelKey = tuple((labels or {}).items())
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # a collector: anything with collect()

    def set_labels(self, **labels: str) -> None:
        """The constant labels of every series (known once the server has its config)."""
        self.labels = tuple(labels.items())

    # -- families the server keeps ------------------------------------------------------------------------------
    def _family(self, name: str, help_text: str, kind: str) -> Family:
        fam = self._families.get(name)
        if fam is None:
            fam = self._families[name] = Family(name, help_text, kind)
        return fam

    def counter(self, name: str, help_text: str) -> Family:
        """A counter whose ``values`` the caller adds to, keyed by label key."""
        return self._family(name, help_text, "counter")

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        fam = self._families[name]
        key = tuple(sorted(labels.items()))
        fam.values[key] = fam.values.get(key, 0.0) + amount

    def gauge_fn(self, name: str, help_text: str, source: Source) -> None:
        """A gauge read from ``source`` at scrape time."""
        self._family(name, help_text, "gauge").source = source

    def counter_fn(self, name: str, help_text: str, source: Source) -> None:
        """A counter read from ``source`` at scrape time (a total the server keeps anyway)."""
        self._family(name, help_text, "counter").source = source

    def histogram(self, name: str, help_text: str, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> Histogram:
        fam = self._family(name, help_text, "histogram")
        if fam.histogram is None:
            fam.histogram = Histogram(bounds)
        return fam.histogram

    def histogram_of(self, name: str, help_text: str, histogram: Histogram) -> None:
        """Export a histogram kept elsewhere (the store's flush latencies)."""
        self._family(name, help_text, "histogram").histogram = histogram

    def collector(self, fn: Callable[[], Iterable[Sampled]]) -> None:
        """``fn`` builds families at each scrape (per topic, per group, per slave)."""
        self._collectors.append(fn)

    # -- the scrape -----------------------------------------------------------------------------------------------
    def _sampled(self) -> Iterator[Sampled]:
        for fam in self._families.values():
            if fam.histogram is not None:
                yield Sampled(fam.name, fam.help, "histogram", histograms={(): fam.histogram})
                continue
            values = fam.values
            if fam.source is not None:
                got = fam.source()
                values = got if isinstance(got, dict) else {(): float(got)}
            yield Sampled(fam.name, fam.help, fam.kind, values)
        for fn in self._collectors:
            yield from fn()

    def collect(self) -> Iterator[Metric]:
        const = self.labels
        for sampled in self._sampled():
            name = f"{self._prefix}_{sampled.name}"
            if sampled.kind == "counter":
                base = name.removesuffix("_total")
                metric = Metric(base, sampled.help, "counter")
                for key, value in sampled.values.items():
                    metric.add_sample(base + "_total", dict(const + key), value)
            elif sampled.kind == "histogram":
                metric = Metric(name, sampled.help, "histogram")
                for key, hist in sampled.histograms.items():
                    labels = dict(const + key)
                    for le, n in hist.cumulative():
                        metric.add_sample(name + "_bucket", {**labels, "le": le}, float(n))
                    metric.add_sample(name + "_count", labels, float(hist.count))
                    metric.add_sample(name + "_sum", labels, hist.sum)
            else:
                metric = Metric(name, sampled.help, "gauge")
                for key, value in sampled.values.items():
                    metric.add_sample(name, dict(const + key), value)
            yield metric

    def render(self) -> str:
        return generate_latest(self.registry).decode()

    def names(self) -> list[str]:
        """The exported family names (a counter's with ``_total``), as a dashboard's queries name them."""
        out = []
        for sampled in self._sampled():
            name = f"{self._prefix}_{sampled.name}"
            out.append(name)
            if sampled.kind == "histogram":
                out += [name + "_bucket", name + "_count", name + "_sum"]
        return out
