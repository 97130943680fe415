"""The unmodified RocketMQ C++ client's sends take the broker's fast path, and read back as they were sent."""

from __future__ import annotations

import asyncio

import pytest

from tests.conformance.test_rocketmq_cpp_client import read_all, run_driver
from tests.integration.test_fast_path import _fast_sends
from tests.support.cluster import create_topic

pytest.importorskip("rocketmq.client", reason="the conformance client rocketmq==0.4.4 is a dev dependency")


def test_cpp_sends_take_the_fast_path(cluster, tmp_path):
    asyncio.run(create_topic(cluster, "CppFast", 4))
    before = _fast_sends(cluster)
    args = ["--namesrv", cluster.namesrv_addr.split(";")[0], "--topic", "CppFast", "--tag", "TagF", "--keys", "kf"]
    sent = run_driver(tmp_path, "produce", *args, "--count", "30")
    assert len(sent) == 30 and all(s["status"] == 0 for s in sent)
    # Every broker's first send creates its first commit log segment on the general path; the rest are fast.
    assert _fast_sends(cluster) - before >= 30 - len(cluster.brokers)
    got = asyncio.run(read_all(cluster.namesrv_addr, "CppFast"))
    assert {m.msg_id for m in got} == {s["id"] for s in sent}
    by_body = {m.body.decode(): m for m in got}
    assert by_body["cpp-7"].tags == "TagF" and by_body["cpp-7"].keys == ["kf-7"]
    assert by_body["cpp-7"].properties["seq"] == "7"
