"""A tiny Prometheus text-format registry (counters and gauges), enough for /metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Family:
    name: str
    help: str
    kind: str
    values: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)
    source: Callable[[], float | dict[tuple[tuple[str, str], ...], float]] | None = None


class Metrics:
    def __init__(self, prefix: str = "krocket") -> None:
        self._prefix = prefix
        self._families: dict[str, _Family] = {}

    def _family(self, name: str, help_text: str, kind: str) -> _Family:
        fam = self._families.get(name)
        if fam is None:
            fam = self._families[name] = _Family(f"{self._prefix}_{name}", help_text, kind)
        return fam

    def counter(self, name: str, help_text: str) -> _Family:
        return self._family(name, help_text, "counter")

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        fam = self._families[name]
        key = tuple(sorted(labels.items()))
        fam.values[key] = fam.values.get(key, 0.0) + amount

    def gauge_fn(
        self, name: str, help_text: str, source: Callable[[], float | dict[tuple[tuple[str, str], ...], float]]
    ) -> None:
        """A gauge read from ``source`` at scrape time."""
        self._family(name, help_text, "gauge").source = source

    def render(self) -> str:
        lines: list[str] = []
        for fam in self._families.values():
            lines.append(f"# HELP {fam.name} {fam.help}")
            lines.append(f"# TYPE {fam.name} {fam.kind}")
            values = fam.values
            if fam.source is not None:
                got = fam.source()
                values = got if isinstance(got, dict) else {(): got}
            for labels, value in values.items():
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{fam.name}{{{label_text}}} {value:g}" if label_text else f"{fam.name} {value:g}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
