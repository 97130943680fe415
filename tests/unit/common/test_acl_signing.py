"""Request signing (RocketMQ's AclClientRPCHook way), plain_acl.yml parsing and address patterns."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from krocket.common.acl import ACCESS_KEY, SIGNATURE, WHITE_LISTED, Credentials, Perm, authenticate, parse_plain_acl
from krocket.common.acl.addresses import host_of, parse_pattern
from krocket.common.acl.reloader import AclFile
from krocket.common.acl.signing import signed_content, verify
from krocket.common.errors import ConfigError, NoPermissionError
from krocket.common.remoting import RemotingCommand
from krocket.common.remoting.command import decode_frame, encode


def _independent_signature(secret: str, fields: dict[str, str], body: bytes) -> str:
    content = "".join(v for k, v in sorted(fields.items()) if k != "Signature").encode() + body
    return base64.b64encode(hmac.new(secret.encode(), content, hashlib.sha1).digest()).decode()


def test_known_vector_matches_an_independent_hmac_sha1():
    fields = {"b": "Orders", "a": "pg", "OnsChannel": "", "AccessKey": "rocketmq2"}
    body = b"hello"
    # sorted names: AccessKey, OnsChannel, a, b -> "rocketmq2" + "" + "pg" + "Orders", then the body
    assert signed_content(fields, body) == b"rocketmq2pgOrdershello"
    expected = base64.b64encode(hmac.new(b"12345678", b"rocketmq2pgOrdershello", hashlib.sha1).digest()).decode()
    assert _independent_signature("12345678", fields, body) == expected
    cmd = RemotingCommand(310, ext_fields={"b": "Orders", "a": "pg", "OnsChannel": ""}, body=body)
    Credentials("rocketmq2", "12345678").sign(cmd)
    assert cmd.ext_fields[ACCESS_KEY] == "rocketmq2"
    assert cmd.ext_fields[SIGNATURE] == expected
    assert verify(cmd, "12345678")
    assert not verify(cmd, "wrong-secret")


def test_signature_survives_the_wire_and_integer_fields_sign_as_decimal_strings():
    cmd = RemotingCommand(11, ext_fields={"queueId": "3", "topic": "T"}, body=b"")
    Credentials("ak", "sk", security_token="tok").sign(cmd)
    assert cmd.ext_fields["SecurityToken"] == "tok"
    got = decode_frame(encode(cmd)[4:])
    assert verify(got, "sk")
    # A peer that sends the integer as a JSON number: the decoder gives its decimal string, which was signed.
    frame = encode(cmd)[4:].replace(b'"queueId":"3"', b'"queueId":3')
    header_len = len(frame) - 4
    frame = (header_len).to_bytes(4, "big") + frame[4:]
    again = decode_frame(frame)
    assert again.ext_fields["queueId"] == "3"
    assert verify(again, "sk")


def test_tampered_body_or_field_fails_verification():
    cmd = RemotingCommand(310, ext_fields={"b": "Orders"}, body=b"x")
    Credentials("ak", "sk").sign(cmd)
    cmd.body = b"y"
    assert not verify(cmd, "sk")
    cmd.body = b"x"
    cmd.ext_fields["b"] = "Other"
    assert not verify(cmd, "sk")
    cmd.ext_fields.pop(SIGNATURE)
    assert not verify(cmd, "sk")


def test_credentials_from_env_and_no_secret_in_repr(monkeypatch):
    monkeypatch.setenv("KROCKET_ACCESS_KEY", "ak")
    monkeypatch.setenv("KROCKET_SECRET_KEY", "s3cret")
    creds = Credentials.from_env()
    assert creds == Credentials("ak", "s3cret")
    assert "s3cret" not in repr(creds)
    monkeypatch.delenv("KROCKET_SECRET_KEY")
    assert Credentials.from_env() is None
    with pytest.raises(ValueError):
        Credentials("", "x")


ACL_YAML = {
    "globalWhiteRemoteAddresses": ["10.10.103.*", "192.168.0.{100,101}"],
    "accounts": [
        {
            "accessKey": "rocketmq2",
            "secretKey": 12345678,
            "admin": False,
            "defaultTopicPerm": "DENY",
            "defaultGroupPerm": "SUB",
            "topicPerms": ["Orders=PUB|SUB", "Audit=SUB"],
            "groupPerms": ["g1=DENY"],
        },
        {"accessKey": "admin", "secretKey": "adminpw", "admin": True, "whiteRemoteAddress": "172.16.0.*"},
    ],
}


def test_plain_acl_parses_accounts_and_permissions():
    acl = parse_plain_acl(ACL_YAML)
    user = acl.account("rocketmq2")
    assert user is not None and user.secret_key == "12345678" and not user.admin
    assert user.topic_perm("Orders") == Perm.PUB | Perm.SUB
    assert user.topic_perm("Audit") == Perm.SUB
    assert user.topic_perm("Other") == Perm.DENY
    assert user.group_perm("g1") == Perm.DENY and user.group_perm("g2") == Perm.SUB
    assert acl.first_admin is not None and acl.first_admin.access_key == "admin"
    assert acl.is_globally_white_listed("10.10.103.7") and acl.is_globally_white_listed("192.168.0.101")
    assert not acl.is_globally_white_listed("192.168.0.102") and not acl.is_globally_white_listed("127.0.0.1")


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"accounts": [{"accessKey": "a"}]}, "accounts[0].secretKey"),
        ({"accounts": [{"accessKey": "a", "secretKey": "b", "topicPerms": ["Orders=WRITE"]}]}, "topicPerms[0]"),
        ({"accounts": [{"accessKey": "a", "secretKey": "b", "defaultGroupPerm": "ALL"}]}, "defaultGroupPerm"),
        ({"accounts": [{"accessKey": "a", "secretKey": "b", "admin": "yes"}]}, "accounts[0].admin"),
        ({"accounts": [{"accessKey": "a", "secretKey": "b", "groupPerms": "g=SUB"}]}, "groupPerms"),
        ({"globalWhiteRemoteAddresses": ["10.300.1.*"]}, "globalWhiteRemoteAddresses[0]"),
        ({"accounts": [{"accessKey": "a", "secretKey": "b"}, {"accessKey": "a", "secretKey": "c"}]}, "twice"),
        ({"accounts": [{"accessKey": "a", "secretKey": "b", "colour": "red"}]}, "colour"),
    ],
)
def test_invalid_plain_acl_names_the_field(data, named):
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_plain_acl(data)


def test_address_patterns():
    assert parse_pattern("*").matches("8.8.8.8")
    assert parse_pattern("10.10.103.*").matches("10.10.103.255")
    assert not parse_pattern("10.10.103.*").matches("10.10.104.1")
    assert parse_pattern("10.10.1-20.*").matches("10.10.20.1")
    assert not parse_pattern("10.10.1-20.*").matches("10.10.21.1")
    assert parse_pattern("192.168.0.{100,101}").matches("192.168.0.100")
    assert not parse_pattern("192.168.0.{100,101}").matches("192.168.0.10")
    assert parse_pattern("127.0.0.1").matches("127.0.0.1")
    assert parse_pattern("::1").matches("::1")
    assert not parse_pattern("").matches("127.0.0.1")
    assert host_of("127.0.0.1:5555") == "127.0.0.1" and host_of("::1:5555") == "::1" and host_of("[::1]:5") == "::1"
    with pytest.raises(ValueError):
        parse_pattern("1.2.{3,4}.5")


def test_authenticate_rules():
    acl = parse_plain_acl(ACL_YAML)
    unsigned = RemotingCommand(34, ext_fields={"AccessKey": "", "OnsChannel": ""})
    with pytest.raises(NoPermissionError, match="not signed"):
        authenticate(acl, unsigned, "127.0.0.1:1000")
    assert authenticate(acl, unsigned, "10.10.103.9:1000") is WHITE_LISTED
    unknown = RemotingCommand(34)
    Credentials("nobody", "x").sign(unknown)
    with pytest.raises(NoPermissionError, match="no ACL account for accessKey nobody"):
        authenticate(acl, unknown, "127.0.0.1:1")
    wrong = RemotingCommand(34)
    Credentials("rocketmq2", "wrong").sign(wrong)
    with pytest.raises(NoPermissionError, match="signature check failed for accessKey rocketmq2"):
        authenticate(acl, wrong, "127.0.0.1:1")
    right = RemotingCommand(34)
    Credentials("rocketmq2", "12345678").sign(right)
    account = authenticate(acl, right, "127.0.0.1:1")
    assert account is not WHITE_LISTED and account.access_key == "rocketmq2"  # type: ignore[union-attr]
    # The admin's own white list passes its requests without a signature.
    admin_unsigned = RemotingCommand(17, ext_fields={"AccessKey": "admin"})
    assert authenticate(acl, admin_unsigned, "172.16.0.4:1") is WHITE_LISTED


def test_acl_file_reloads_and_keeps_old_rules_on_a_bad_file(tmp_path, caplog):
    path = tmp_path / "plain_acl.yml"
    path.write_text("accounts:\n  - accessKey: a\n    secretKey: one\n")
    acl = AclFile(path)
    assert acl.rules.account("a").secret_key == "one"  # type: ignore[union-attr]
    assert not acl.check()
    path.write_text("accounts:\n  - accessKey: a\n    secretKey: two\n    admin: true\n")
    assert acl.check()
    assert acl.rules.account("a").secret_key == "two"  # type: ignore[union-attr]
    path.write_text("accounts:\n  - accessKey: a\n    topicPerms: [x=WHAT]\n")
    assert not acl.check()
    assert acl.rules.account("a").secret_key == "two"  # type: ignore[union-attr]
    assert acl.reload_errors == 1
    assert sum("not reloaded" in r.message for r in caplog.records) == 1
    assert not acl.check()  # the same bad file: no second error
    assert acl.reload_errors == 1


def test_acl_file_invalid_at_start_is_a_config_error(tmp_path):
    path = tmp_path / "plain_acl.yml"
    path.write_text("accounts: [{accessKey: a, secretKey: b, defaultTopicPerm: NOPE}]\n")
    with pytest.raises(ConfigError, match="defaultTopicPerm"):
        AclFile(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        AclFile(tmp_path / "missing.yml")
