"""Topics files for ``krocket topic create|update|delete --from-file``: entries, defaults, and errors that name the
entry to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from krocket.cli.topic_file import TopicDefaults, read_topic_file, topic_configs, topic_names
from krocket.common.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "topics.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_entries_take_the_defaults_they_do_not_set(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "topics:\n  - payments\n  - {name: orders, readQueues: 16, writeQueues: 4, perm: 4, messageType: FIFO}\n",
    )
    configs = topic_configs(read_topic_file(path), path, TopicDefaults(read_queues=2, message_type="DELAY"))
    (payments, orders) = configs
    assert (payments.topic_name, payments.read_queue_nums, payments.write_queue_nums) == ("payments", 2, 2)
    assert payments.attributes == {"message.type": "DELAY"}
    assert (orders.read_queue_nums, orders.write_queue_nums, orders.perm) == (16, 4, 4)
    assert orders.attributes == {"message.type": "FIFO"}
    plain = topic_configs(read_topic_file(path), path, TopicDefaults())
    assert plain[0].attributes == {}  # no type given anywhere: the broker keeps the topic's own


def test_a_json_list_and_names_for_a_delete(tmp_path: Path) -> None:
    path = write(tmp_path, '["a", {"name": "b"}]', "topics.json")
    assert topic_names(read_topic_file(path), path) == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("- {name: t, readQueues: 0}", "entry 1 (t): readQueueNums must be between 1 and 1024"),
        ("- a\n- {name: b, writeQueues: 9}", "entry 2 (b): writeQueueNums must be between 1 and readQueueNums"),
        ("- {name: t, queues: 4}", "entry 1 (t): unknown field(s) queues"),
        ("- {name: t, messageType: ORDERED}", "messageType must be one of NORMAL, FIFO"),
        ("- {name: t, perm: 7}", "perm must be 2, 4 or 6"),
        ("- {name: t, readQueues: '8'}", "readQueues must be an integer"),
        ("- {readQueues: 8}", "entry 1 has no name"),
        ("- 'bad topic!'", "entry 1: topic name 'bad topic!'"),
        ("- TBW102", "system topic"),
        ("- a\n- a", "topic a is listed twice"),
        ("- [1, 2]", "entry 1 is neither a topic name nor an object"),
        ("{}", "expected a list of topics"),
        ("topics: [", "is not valid YAML"),
    ],
)
def test_bad_entries_are_refused_naming_the_entry(tmp_path: Path, text: str, why: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=why.replace("(", r"\(").replace(")", r"\)")):
        topic_configs(read_topic_file(path), path, TopicDefaults())


def test_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the topics file .*none.yaml"):
        read_topic_file(str(tmp_path / "none.yaml"))
