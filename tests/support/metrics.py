"""Read a server's /metrics the way Prometheus does (prometheus_client's parser)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape_samples(port: int) -> dict[str, float]:
    """Each sample name (``krocket_broker_messages_in_total``, ``..._bucket``) with its values summed over labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def metric_value(port: int, name: str) -> float:
    """The value of the sample ``name`` (summed over its labels); an AssertionError when it is not exported."""
    got = scrape_samples(port)
    if name not in got:
        raise AssertionError(f"{name} is not on /metrics")
    return got[name]


def samples_by_label(port: int, name: str, label: str) -> dict[str, float]:
    """The samples called ``name`` summed by the value of one label (``code`` -> count)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                key = sample.labels.get(label, "")
                out[key] = out.get(key, 0.0) + sample.value
    return out
