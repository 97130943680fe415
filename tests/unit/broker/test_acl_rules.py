"""The broker's request-code table under the ACL and the check of single requests."""

from __future__ import annotations

import json

import pytest

from krocket.broker.acl import RULES, Access, check_request, rule_of
from krocket.broker.processors import PROCESSORS
from krocket.common.acl import Credentials, parse_plain_acl
from krocket.common.codes import RequestCode
from krocket.common.errors import NoPermissionError
from krocket.common.headers import SendMessageHeader
from krocket.common.remoting import RemotingCommand

ACL = parse_plain_acl(
    {
        "globalWhiteRemoteAddresses": ["10.0.0.*"],
        "accounts": [
            {
                "accessKey": "rocketmq2",
                "secretKey": "pw2",
                "defaultTopicPerm": "DENY",
                "defaultGroupPerm": "DENY",
                "topicPerms": ["Orders=PUB|SUB", "Audit=SUB"],
                "groupPerms": ["readers=SUB"],
            },
            {"accessKey": "admin", "secretKey": "adminpw", "admin": True},
        ],
    }
)
USER = Credentials("rocketmq2", "pw2")
ADMIN = Credentials("admin", "adminpw")
PEER = "127.0.0.1:40000"


def signed(code: int, fields: dict[str, str], creds: Credentials | None = USER, body: bytes = b"") -> RemotingCommand:
    cmd = RemotingCommand(code, ext_fields=dict(fields), body=body)
    if creds is not None:
        creds.sign(cmd)
    return cmd


def send(topic: str) -> dict[str, str]:
    return SendMessageHeader(producer_group="any-producers", topic=topic).to_v2_fields()


def test_every_served_code_has_an_explicit_rule_and_unknown_codes_are_admin_only():
    assert set(PROCESSORS) <= set(RULES), set(PROCESSORS) - set(RULES)
    assert rule_of(9999) is Access.ADMIN
    for code in (17, 215, 25, 200, 207):
        assert rule_of(code) is Access.ADMIN


def test_send_needs_pub_on_the_topic_and_producer_groups_are_not_checked():
    check_request(ACL, signed(RequestCode.SEND_MESSAGE_V2, send("Orders")), PEER)
    with pytest.raises(NoPermissionError, match="no permission to PUB on topic Audit for accessKey rocketmq2"):
        check_request(ACL, signed(RequestCode.SEND_MESSAGE_V2, send("Audit")), PEER)
    with pytest.raises(NoPermissionError, match="PUB on topic Secret"):
        check_request(ACL, signed(RequestCode.SEND_MESSAGE, {"producerGroup": "p", "topic": "Secret"}), PEER)


def test_pull_needs_sub_on_topic_and_group_and_retry_topics_belong_to_their_group():
    fields = {"consumerGroup": "readers", "topic": "Audit", "queueId": "0", "queueOffset": "0"}
    check_request(ACL, signed(RequestCode.PULL_MESSAGE, fields), PEER)
    with pytest.raises(NoPermissionError, match="SUB on group others"):
        check_request(ACL, signed(RequestCode.PULL_MESSAGE, {**fields, "consumerGroup": "others"}), PEER)
    with pytest.raises(NoPermissionError, match="SUB on topic Secret"):
        check_request(ACL, signed(RequestCode.PULL_MESSAGE, {**fields, "topic": "Secret"}), PEER)
    check_request(ACL, signed(RequestCode.PULL_MESSAGE, {**fields, "topic": "%RETRY%readers"}), PEER)
    with pytest.raises(NoPermissionError, match="SUB on group others"):
        check_request(ACL, signed(RequestCode.SEND_MESSAGE_V2, send("%RETRY%others")), PEER)


def test_another_groups_offset_and_admin_codes_are_refused_to_non_admins():
    offset = {"consumerGroup": "others", "topic": "Orders", "queueId": "0", "commitOffset": str(10**12)}
    with pytest.raises(NoPermissionError, match="SUB on group others"):
        check_request(ACL, signed(RequestCode.UPDATE_CONSUMER_OFFSET, offset), PEER)
    check_request(ACL, signed(RequestCode.UPDATE_CONSUMER_OFFSET, offset, ADMIN), PEER)
    for code in (RequestCode.UPDATE_AND_CREATE_TOPIC, RequestCode.DELETE_TOPIC_IN_BROKER, 25, 200, 207, 9999):
        with pytest.raises(NoPermissionError, match=f"request code {int(code)} needs an admin account"):
            check_request(ACL, signed(code, {"topic": "Orders"}), PEER)
        check_request(ACL, signed(code, {"topic": "Orders"}, ADMIN), PEER)


def test_signed_only_codes_and_anonymous_requests():
    check_request(ACL, signed(RequestCode.HEART_BEAT, {}, body=b"{}"), PEER)
    check_request(ACL, signed(RequestCode.GET_MAX_OFFSET, {"topic": "Secret", "queueId": "0"}), PEER)
    with pytest.raises(NoPermissionError, match="not signed"):
        check_request(ACL, signed(RequestCode.HEART_BEAT, {"AccessKey": "", "OnsChannel": ""}, None), PEER)
    with pytest.raises(NoPermissionError, match="signature check failed"):
        check_request(ACL, signed(RequestCode.HEART_BEAT, {}, Credentials("rocketmq2", "bad")), PEER)
    # A globally white-listed address passes anything, signed or not (RocketMQ's rule).
    check_request(ACL, signed(RequestCode.DELETE_TOPIC_IN_BROKER, {"topic": "Orders"}, None), "10.0.0.5:1")


def heartbeat(group: str, *topics: str) -> bytes:
    subscriptions = [{"topic": t, "subString": "*"} for t in topics]
    return json.dumps(
        {
            "clientID": "127.0.0.1@1",
            "producerDataSet": [{"groupName": "any-producers"}],
            "consumerDataSet": [{"groupName": group, "subscriptionDataSet": subscriptions}],
        }
    ).encode()


def test_a_heartbeat_needs_sub_on_its_consumer_groups_and_their_topics():
    check_request(ACL, signed(RequestCode.HEART_BEAT, {}, body=heartbeat("readers", "Audit", "%RETRY%readers")), PEER)
    check_request(ACL, signed(RequestCode.HEART_BEAT, {}, body=b'{"producerDataSet": [{"groupName": "p"}]}'), PEER)
    with pytest.raises(NoPermissionError, match="SUB on group others"):
        check_request(ACL, signed(RequestCode.HEART_BEAT, {}, body=heartbeat("others", "Audit")), PEER)
    with pytest.raises(NoPermissionError, match="SUB on topic Secret"):
        check_request(ACL, signed(RequestCode.HEART_BEAT, {}, body=heartbeat("readers", "Secret")), PEER)
    check_request(ACL, signed(RequestCode.HEART_BEAT, {}, ADMIN, body=heartbeat("others", "Secret")), PEER)


def test_lock_requests_need_sub_on_the_group_read_as_the_lock_processor_reads_it():
    body = b'{"consumerGroup":"readers","clientId":"c1","mqSet":[{"topic":"Audit","brokerName":"b","queueId":"0"}]}'
    check_request(ACL, signed(RequestCode.LOCK_BATCH_MQ, {}, body=body), PEER)
    others = body.replace(b'"readers"', b'"others"')
    with pytest.raises(NoPermissionError, match="SUB on group others"):
        check_request(ACL, signed(RequestCode.UNLOCK_BATCH_MQ, {}, body=others), PEER)
    with pytest.raises(NoPermissionError, match="SUB on group "):
        check_request(ACL, signed(RequestCode.LOCK_BATCH_MQ, {}, body=b"not json"), PEER)
