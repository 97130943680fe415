"""Request signing as RocketMQ 4.x clients do it (``AclClientRPCHook``), the one definition for krocket.

A signed request carries the ext fields ``AccessKey``, optionally ``SecurityToken``, and ``Signature`` =
Base64(HmacSHA1(secretKey, content)), where content is the values of every other ext field, sorted by field
name and concatenated (UTF-8), followed by the body bytes. The RocketMQ C++ client also adds an empty
``OnsChannel``; it is signed like any other field. Ext fields that arrived as JSON numbers are decoded to
their decimal strings (``krocket.common.remoting.command``), which is what the sender signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

from krocket.common.remoting.command import RemotingCommand, header_fields

ACCESS_KEY = "AccessKey"
SIGNATURE = "Signature"
SECURITY_TOKEN = "SecurityToken"
ONS_CHANNEL = "OnsChannel"

ENV_ACCESS_KEY = "KROCKET_ACCESS_KEY"
ENV_SECRET_KEY = "KROCKET_SECRET_KEY"


def signed_content(ext_fields: Mapping[str, str], body: bytes) -> bytes:
    """The bytes a signature covers: the values of all ext fields but ``Signature``, sorted by name, then the body."""
    values = "".join(ext_fields[name] for name in sorted(ext_fields) if name != SIGNATURE)
    return values.encode("utf-8", "surrogatepass") + body  # never fails; a lone surrogate cannot match


def signature(secret_key: str, content: bytes) -> str:
    """Base64(HmacSHA1(secret_key, content))."""
    digest = hmac.new(secret_key.encode("utf-8"), content, hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(cmd: RemotingCommand, secret_key: str) -> bool:
    """Whether ``cmd`` carries the signature ``secret_key`` gives for its fields and body (constant-time compare)."""
    sent = cmd.ext_fields.get(SIGNATURE)
    if not sent:
        return False
    expected = signature(secret_key, signed_content(cmd.ext_fields, cmd.body))
    return hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), expected.encode("ascii"))


@dataclass(frozen=True, slots=True)
class Credentials:
    """An ACL account's keys: what a client signs its requests with."""

    access_key: str
    secret_key: str
    security_token: str | None = None

    def __post_init__(self) -> None:
        if not self.access_key:
            raise ValueError("access_key must not be empty")
        if not self.secret_key:
            raise ValueError("secret_key must not be empty")

    def __repr__(self) -> str:  # never print the secret
        return f"Credentials(access_key={self.access_key!r}, secret_key='***')"

    @classmethod
    def from_env(cls) -> Credentials | None:
        """From ``KROCKET_ACCESS_KEY`` and ``KROCKET_SECRET_KEY``; ``None`` unless both are set."""
        access_key = os.environ.get(ENV_ACCESS_KEY, "")
        secret_key = os.environ.get(ENV_SECRET_KEY, "")
        if access_key and secret_key:
            return cls(access_key, secret_key)
        return None

    def sign(self, cmd: RemotingCommand) -> None:
        """Add ``AccessKey`` (and ``SecurityToken``) and the ``Signature`` over the request to ``cmd``."""
        fields = cmd.ext_fields = header_fields(cmd.ext_fields)  # strings, as the receiver decodes them
        fields.pop(SIGNATURE, None)
        fields[ACCESS_KEY] = self.access_key
        if self.security_token:
            fields[SECURITY_TOKEN] = self.security_token
        fields[SIGNATURE] = signature(self.secret_key, signed_content(fields, cmd.body))


def resolve_credentials(credentials: Credentials | None) -> Credentials | None:
    """``credentials`` if given, else those of the environment (``KROCKET_ACCESS_KEY``/``KROCKET_SECRET_KEY``)."""
    return credentials if credentials is not None else Credentials.from_env()
