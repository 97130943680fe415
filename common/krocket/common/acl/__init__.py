"""Access control, RocketMQ 4.x style: request signing, plain_acl.yml rules, authentication, reloading."""

from krocket.common.acl.authenticate import WHITE_LISTED, WhiteListed, authenticate
from krocket.common.acl.plain_acl import AclAccount, Perm, PlainAcl, load_plain_acl, parse_plain_acl
from krocket.common.acl.reloader import AclFile
from krocket.common.acl.signing import (
    ACCESS_KEY,
    ONS_CHANNEL,
    SECURITY_TOKEN,
    SIGNATURE,
    Credentials,
    resolve_credentials,
    signature,
    signed_content,
    verify,
)

__all__ = [
    "ACCESS_KEY",
    "ONS_CHANNEL",
    "SECURITY_TOKEN",
    "SIGNATURE",
    "WHITE_LISTED",
    "AclAccount",
    "AclFile",
    "Credentials",
    "Perm",
    "PlainAcl",
    "WhiteListed",
    "authenticate",
    "load_plain_acl",
    "parse_plain_acl",
    "resolve_credentials",
    "signature",
    "signed_content",
    "verify",
]
