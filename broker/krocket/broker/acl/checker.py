"""The broker's ACL check of one request, and the handler wrapper that applies it."""

from __future__ import annotations

from krocket.broker.acl.rules import Access, Need, rule_of
from krocket.common.acl import WHITE_LISTED, AclAccount, PlainAcl, authenticate
from krocket.common.errors import NoPermissionError
from krocket.common.remoting import RemotingCommand


def _allowed(account: AclAccount, need: Need) -> bool:
    owned = account.group_perm(need.name) if need.group else account.topic_perm(need.name)
    return need.perm & owned == need.perm


def check_request(acl: PlainAcl, cmd: RemotingCommand, peer: str) -> None:
    """Pass, or raise ``NoPermissionError`` (NO_PERMISSION, 16) naming the missing permission."""
    account = authenticate(acl, cmd, peer)
    if account is WHITE_LISTED:
        return
    assert isinstance(account, AclAccount)
    rule = rule_of(cmd.code)
    if rule is Access.SIGNED:
        return
    if rule is Access.ADMIN:
        if not account.admin:
            raise NoPermissionError(
                f"request code {cmd.code} needs an admin account; accessKey {account.access_key} is not one"
            )
        return
    assert not isinstance(rule, Access)
    for need in rule(cmd):
        if not _allowed(account, need):
            raise NoPermissionError(f"no permission to {need.describe()} for accessKey {account.access_key}")
