"""``--access-key`` / ``--secret-key`` of the client and admin verbs: the ACL account requests are signed with.

Without them the client reads ``KROCKET_ACCESS_KEY`` / ``KROCKET_SECRET_KEY``; without those, requests go
unsigned (what a cluster without ACL expects).
"""

from __future__ import annotations

import argparse
from typing import Any

from krocket.common.acl import Credentials
from krocket.common.errors import ConfigError


def add_credential_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--access-key", default=None, help="ACL access key to sign requests with (default $KROCKET_ACCESS_KEY)"
    )
    parser.add_argument("--secret-key", default=None, help="ACL secret key (default $KROCKET_SECRET_KEY)")


def credential_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``credentials=`` for a krocket.client constructor; ``ConfigError`` when only one key is given."""
    access_key, secret_key = getattr(args, "access_key", None), getattr(args, "secret_key", None)
    if access_key is None and secret_key is None:
        return {}
    if not access_key or not secret_key:
        raise ConfigError("--access-key and --secret-key go together: give both (or neither, to use the environment)")
    return {"credentials": Credentials(access_key, secret_key)}
