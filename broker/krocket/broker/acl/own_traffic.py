"""The broker's own requests (registration with the name servers, a slave's metadata copy) are signed with
the first admin account of its ACL file, read at each request so that a reload takes effect."""

from __future__ import annotations

import logging
from collections.abc import Callable

from krocket.common.acl import AclFile, Credentials
from krocket.common.remoting import RemotingCommand

log = logging.getLogger(__name__)


def own_traffic_signer(acl: AclFile) -> Callable[[RemotingCommand], None]:
    if acl.rules.first_admin is None:
        log.warning(
            "ACL file %s has no admin account: this broker's registrations and replication requests go unsigned",
            acl.path,
        )

    def sign(cmd: RemotingCommand) -> None:
        admin = acl.rules.first_admin
        if admin is not None:
            Credentials(admin.access_key, admin.secret_key).sign(cmd)

    return sign
