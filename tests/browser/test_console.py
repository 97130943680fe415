"""The name server's web console in headless Chromium against a live cluster (one name server, one broker
group): every page loads, a topic is created in the page, a message sent with the real CLI is found by key and
by id (body and a property shown, an HTML body shown as text), a group's lag falls while a consumer runs, and a
dead letter is resent from the page. Screenshots go to the ``artifacts`` directory (printed)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from krocket.client import ConsumeStatus, Message, MessageExt, Producer, PullConsumer, PushConsumer

from tests.support.cluster import LocalCluster, create_topic, start_cluster

KROCKET = [sys.executable, "-m", "krocket.cli.main"]
WAIT = 40.0
INJECTED = '<img src=x onerror="window.__pwned=1">'


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("console-cluster")
    config = root / "broker.yaml"
    config.write_text("messageDelayLevel: " + " ".join(["1s"] * 18) + "\n")
    cluster = start_cluster(root / "cluster", namesrvs=1, groups=1, extra_broker_args=["--config", str(config)])
    try:
        yield cluster
    finally:
        cluster.stop()


def console_url(cluster: LocalCluster, page: str = "cluster") -> str:
    return f"http://127.0.0.1:{cluster.namesrvs[0].http_port}/#{page}"


def cli(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KROCKET, *args, "--namesrv", cluster.namesrv_addr], capture_output=True, text=True, timeout=60, check=False
    )


def wait_for(driver: Any, condition: Callable[[Any], Any], message: str, timeout: float = WAIT) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException])
    try:
        return wait.until(condition)
    except TimeoutException:
        notice = text_of(driver, "#notice")
        raise AssertionError(f"timed out waiting for {message}; the page's notice: {notice!r}") from None


def text_of(driver: Any, css: str) -> str:
    return read_element(driver, css, lambda element: str(element.text))


def read_element(driver: Any, css: str, read: Callable[[Any], str]) -> str:
    """``read`` of the first element matching ``css`` ("" when there is none), found again when the page
    re-renders it between the lookup and the read (the console redraws its tables on every refresh)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(20):
        try:
            found = driver.find_elements(By.CSS_SELECTOR, css)
            return read(found[0]) if found else ""
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"{css} was redrawn on every one of 20 reads")


def open_page(driver: Any, cluster: LocalCluster, page: str) -> None:
    driver.get(console_url(cluster, page))


def fill(driver: Any, field_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.ID, field_id)
    element.clear()
    element.send_keys(value)


def click(driver: Any, element_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).click()


def send_until_routed(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    """``krocket send`` (retried while the new topic's route reaches the name server); its JSON line."""
    deadline = time.monotonic() + WAIT
    while True:
        sent = cli(cluster, "send", *args)
        if sent.returncode == 0:
            return dict(json.loads(sent.stdout.splitlines()[0]))
        if time.monotonic() > deadline:
            raise AssertionError(f"krocket send failed: {sent.stderr}")
        time.sleep(0.5)


def test_cluster_and_topics_pages_load(browser: Any, live: LocalCluster, artifacts: Path) -> None:
    open_page(browser, live, "cluster")
    wait_for(browser, lambda d: "broker-a" in text_of(d, "#brokers"), "the broker in the cluster table")
    rows = text_of(browser, "#brokers")
    assert "MASTER" in rows and "ok" in rows, rows
    browser.save_screenshot(str(artifacts / "console-cluster.png"))
    open_page(browser, live, "topics")
    wait_for(browser, lambda d: "TBW102" in text_of(d, "#topics-table"), "the topics table")


def test_topic_created_in_the_page_takes_a_cli_message_found_by_key_and_id(
    browser: Any, live: LocalCluster, artifacts: Path
) -> None:
    topic, key = unique("ConsoleT"), unique("key")
    open_page(browser, live, "topics")
    wait_for(browser, lambda d: "TBW102" in text_of(d, "#topics-table"), "the topics page")
    fill(browser, "create-topic", "TBW102")
    click(browser, "create-submit")
    wait_for(browser, lambda d: "system topic" in text_of(d, "#notice"), "the refusal of a system topic")
    fill(browser, "create-topic", topic)
    fill(browser, "create-read", "4")
    fill(browser, "create-write", "8")
    click(browser, "create-submit")
    wait_for(browser, lambda d: "writeQueueNums" in text_of(d, "#notice"), "the refusal of write > read")
    fill(browser, "create-write", "2")
    click(browser, "create-submit")
    wait_for(browser, lambda d: f"created topic {topic}" in text_of(d, "#notice"), "the topic created")
    wait_for(browser, lambda d: topic in text_of(d, "#topics-table"), "the new topic in the table")
    assert "4/2" in text_of(browser, "#topics-table")

    sent = send_until_routed(live, "--topic", topic, "--key", key, "--property", "color=blue", "hello console")
    injected = send_until_routed(live, "--topic", topic, "--key", key + "-html", INJECTED)

    open_page(browser, live, "messages")
    wait_for(browser, lambda d: d.find_elements("id", "lookup-submit"), "the lookup form")
    fill(browser, "lookup-topic", topic)
    fill(browser, "lookup-key", key)
    click(browser, "lookup-submit")
    wait_for(browser, lambda d: "1 found" in text_of(d, "#found"), "the message by key")
    shown = text_of(browser, "#results")
    assert "hello console" in text_of(browser, "pre.body")
    assert "color" in shown and "blue" in shown and sent["msgId"] in shown, shown

    fill(browser, "lookup-key", "")
    fill(browser, "lookup-id", injected["msgId"])
    click(browser, "lookup-submit")
    wait_for(browser, lambda d: injected["msgId"] in text_of(d, "#results"), "the message by id")
    assert text_of(browser, "pre.body") == INJECTED  # the markup is shown as text
    assert not browser.find_elements("css selector", "#results img")
    assert browser.execute_script("return window.__pwned === undefined")
    browser.save_screenshot(str(artifacts / "console-message.png"))


class ConsumerThread:
    """A krocket.client PushConsumer on its own event loop, slow on purpose (one message per 40 ms)."""

    def __init__(self, cluster: LocalCluster, group: str, topic: str) -> None:
        self.consumed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run(cluster, group, topic)), daemon=True)

    async def _run(self, cluster: LocalCluster, group: str, topic: str) -> None:
        async def listener(messages: list[MessageExt]) -> ConsumeStatus:
            await asyncio.sleep(0.04 * len(messages))
            self.consumed += len(messages)
            return ConsumeStatus.SUCCESS

        consumer = PushConsumer(group, cluster.namesrv_addr, consume_from="FIRST", consume_threads=1)
        consumer.subscribe(topic)
        consumer.register_listener(listener)
        await consumer.start()
        try:
            while not self._stop.is_set():
                await asyncio.sleep(0.1)
        finally:
            await consumer.shutdown()

    def __enter__(self) -> ConsumerThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


async def _backlog(cluster: LocalCluster, topic: str, group: str, count: int) -> None:
    """``count`` messages in ``topic`` and ``group`` at offset 0 of every queue: its lag is ``count``."""
    await create_topic(cluster, topic, queues=2)
    async with Producer(unique("pg"), cluster.namesrv_addr) as producer:
        for i in range(count):
            await producer.send(Message(topic, f"m{i}".encode()))
    async with PullConsumer(group, cluster.namesrv_addr) as pull:
        for queue in await pull.fetch_queues(topic):
            await pull.update_offset(queue, 0)


def test_group_lag_falls_while_a_consumer_runs(browser: Any, live: LocalCluster, artifacts: Path) -> None:
    topic, group, count = unique("LagT"), unique("cg"), 120
    asyncio.run(_backlog(live, topic, group, count))
    open_page(browser, live, "groups")
    wait_for(browser, lambda d: group in text_of(d, "#groups-table"), "the group in the groups table")
    wait_for(browser, lambda d: d.find_element("link text", group).click() or True, "a click on the group's link")
    wait_for(browser, lambda d: text_of(d, "#total-lag") == str(count), f"a lag of {count}")
    assert "LagT" in text_of(browser, "#lag-table")
    seen = [count]
    with ConsumerThread(live, group, topic) as consumer:
        deadline = time.monotonic() + 60
        while seen[-1] != 0 and time.monotonic() < deadline:
            value = text_of(browser, "#total-lag")
            if value.isdigit() and int(value) != seen[-1]:
                seen.append(int(value))
            time.sleep(0.2)
        wait_for(browser, lambda d: text_of(d, "#members-table").count("@") >= 1, "the consumer as a member")
        browser.save_screenshot(str(artifacts / "console-group.png"))
    assert seen[-1] == 0, f"lag seen {seen}, consumed {consumer.consumed}"
    assert seen == sorted(seen, reverse=True), seen  # it only fell
    points = read_element(browser, "#lag-chart polyline", lambda line: str(line.get_attribute("points")))
    assert len(points.split()) >= 2, points


def test_a_dead_letter_is_resent_from_the_page(browser: Any, live: LocalCluster) -> None:
    topic, group = unique("DlqT"), unique("cg")
    asyncio.run(create_topic(live, topic, queues=1))

    async def poison() -> None:
        consumer = PushConsumer(group, live.namesrv_addr, consume_from="FIRST", max_reconsume_times=0)
        consumer.subscribe(topic)
        consumer.register_listener(lambda messages: ConsumeStatus.RECONSUME_LATER)
        async with Producer(unique("pg"), live.namesrv_addr) as producer:
            await producer.send(Message(topic, b"poison body", keys=["poison"]))
        await consumer.start()
        try:
            from krocket.cli.dlq_commands import read_dead_letters

            deadline = time.monotonic() + WAIT
            while not await read_dead_letters(group, live.namesrv_addr):
                assert time.monotonic() < deadline, "no dead letter"
                await asyncio.sleep(0.3)
        finally:
            await consumer.shutdown()

    asyncio.run(poison())
    open_page(browser, live, "dlq")
    wait_for(browser, lambda d: d.find_elements("id", "dlq-load"), "the dead letter form")
    fill(browser, "dlq-group", group)
    click(browser, "dlq-load")
    wait_for(browser, lambda d: "1 dead letter" in text_of(d, "#dlq-count"), "the dead letter listed")
    assert "poison body" in text_of(browser, "#dlq-table") and topic in text_of(browser, "#dlq-table")
    browser.find_element("css selector", "button.resend").click()
    wait_for(browser, lambda d: f"to {topic}" in text_of(d, "#notice"), "the resend confirmed")

    async def resent() -> list[MessageExt]:
        async with PullConsumer(unique("check"), live.namesrv_addr) as pull:
            (queue,) = await pull.fetch_queues(topic)
            result = await pull.pull(queue, offset=0, max_nums=8)
            return list(result.messages)

    assert [m.body for m in asyncio.run(resent())] == [b"poison body", b"poison body"]
