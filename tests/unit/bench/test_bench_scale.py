"""The figures of ``krocket bench scale`` from raw samples."""

from __future__ import annotations

from krocket.cli.bench import scale_report as report


def test_deciles_follow_the_order_the_samples_were_taken() -> None:
    samples = [0.001] * 50 + [0.002] * 50  # the table grew and creates got slower
    deciles = report.by_decile(samples)
    assert len(deciles) == 10
    assert [d["p50_us"] for d in deciles] == [1000] * 5 + [2000] * 5
    assert report.growth_ratio(deciles) == 2.0
    assert report.growth_ratio(report.by_decile([])) is None


def test_latency_summary() -> None:
    assert report.latency([0.003, 0.001, 0.002]) == {"n": 3, "p50_us": 2000, "p99_us": 3000, "max_us": 3000}
    assert report.latency([])["p50_us"] is None


def test_a_periodic_round_per_name_server() -> None:
    before = {"versionChecks": 10, "sentBytes": 5000, "fullRegistrations": 2, "deltas": 7}
    after = {"versionChecks": 16, "sentBytes": 5900, "fullRegistrations": 2, "deltas": 7}
    assert report.per_round(before, after, namesrvs=2) == {
        "rounds": 3,
        "bytes_per_namesrv_per_round": 150,
        "full_registrations": 0,
        "deltas": 0,
    }
    assert report.per_round(before, before, 2)["bytes_per_namesrv_per_round"] is None


def test_rss_and_cpu_scaling() -> None:
    assert report.kib_per_topic(1000, 3000, 1000) == 2.0
    assert report.kib_per_topic(None, 3000, 1000) is None
    assert report.cpu_per_30s(0.5, 10.0) == 1.5
    assert report.cpu_per_30s(None, 10.0) is None
