"""Who sent a request: white-listed address, or an account whose signature checks out (else NO_PERMISSION)."""

from __future__ import annotations

from krocket.common.acl.addresses import host_of
from krocket.common.acl.plain_acl import AclAccount, PlainAcl
from krocket.common.acl.signing import ACCESS_KEY, verify
from krocket.common.errors import NoPermissionError
from krocket.common.remoting.command import RemotingCommand


class WhiteListed:
    """The sender's address is white-listed: it passes every check, signed or not (RocketMQ's rule)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "WHITE_LISTED"


WHITE_LISTED = WhiteListed()


def authenticate(acl: PlainAcl, cmd: RemotingCommand, peer: str) -> AclAccount | WhiteListed:
    """The account that signed ``cmd`` (from ``peer``, ``host:port``), or ``WHITE_LISTED``.

    Raises ``NoPermissionError`` for an unsigned request (no or empty ``AccessKey``: the C++ client sends an
    empty one without credentials), an unknown access key or a wrong signature.
    """
    host = host_of(peer)
    if acl.is_globally_white_listed(host):
        return WHITE_LISTED
    access_key = cmd.ext_fields.get(ACCESS_KEY) or ""
    if not access_key:
        raise NoPermissionError(f"request code {cmd.code} is not signed: no AccessKey (the ACL is on)")
    account = acl.account(access_key)
    if account is None:
        raise NoPermissionError(f"no ACL account for accessKey {access_key}")
    if account.is_white_listed(host):
        return WHITE_LISTED
    if not verify(cmd, account.secret_key):
        raise NoPermissionError(f"signature check failed for accessKey {access_key}")
    return account
