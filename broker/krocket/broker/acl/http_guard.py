"""The HTTP admin API under the ACL: who a request is (bearer token, basic auth or a key header pair), and
what it may see or change. Health, readiness, metrics and broker info stay open; writes need an admin
(401 without valid credentials, 403 for a non-admin account); topic and group data need SUB on them."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from krocket.common.acl import WHITE_LISTED, AclAccount, AclFile, Perm, WhiteListed
from krocket.common.errors import ConfigError

ACCESS_KEY_HEADER = "X-Krocket-Access-Key"
SECRET_KEY_HEADER = "X-Krocket-Secret-Key"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/api/v1/broker"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Identity = AclAccount | WhiteListed


class TokenAdmin:
    """Whoever shows the bearer token of ``httpAdminTokenFile``: an admin for the HTTP API."""

    __slots__ = ()
    admin = True


TOKEN_ADMIN = TokenAdmin()


def read_token_file(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"httpAdminTokenFile {path}: cannot be read: {exc.strerror}") from None
    if not token:
        raise ConfigError(f"httpAdminTokenFile {path}: is empty")
    return token


class HttpGuard:
    def __init__(self, acl: AclFile, token: str | None = None) -> None:
        self.acl = acl
        self.token = token

    def identify(self, request: web.Request) -> Identity | TokenAdmin | None:
        """The caller, or None when it showed no valid credentials."""
        rules = self.acl.rules
        if rules.is_globally_white_listed(request.remote or ""):
            return WHITE_LISTED
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            if self.token and hmac.compare_digest(value.strip().encode(), self.token.encode()):
                return TOKEN_ADMIN
            return None
        if scheme.lower() == "basic":
            try:
                access_key, _, secret_key = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
        else:
            access_key = request.headers.get(ACCESS_KEY_HEADER, "")
            secret_key = request.headers.get(SECRET_KEY_HEADER, "")
        account = rules.account(access_key) if access_key else None
        if account is None or not hmac.compare_digest(secret_key.encode(), account.secret_key.encode()):
            return None
        return account

    @staticmethod
    def may_read(identity: Identity | TokenAdmin, name: str, group: bool = False) -> bool:
        if not isinstance(identity, AclAccount):
            return True
        owned = identity.group_perm(name) if group else identity.topic_perm(name)
        return bool(owned & Perm.SUB)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        identity = self.identify(request)
        if identity is None:
            return web.json_response(
                {"error": "credentials required: Authorization: Bearer <token>, basic auth or an access key pair"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="krocket"'},
            )
        if request.method not in READ_METHODS and isinstance(identity, AclAccount) and not identity.admin:
            return web.json_response(
                {"error": f"{request.method} {request.path} needs an admin account; {identity.access_key} is not one"},
                status=403,
            )
        return await handler(request)


GUARD_KEY = web.AppKey("acl_guard", HttpGuard)


def reader(request: web.Request) -> Callable[[str, bool], bool]:
    """``may_read(name, is_group)`` for the caller of ``request``: always true when the ACL is off."""
    guard = request.app.get(GUARD_KEY)
    identity = guard.identify(request) if guard is not None else None
    if identity is None:  # ACL off (without credentials the middleware has answered 401 already)
        return lambda name, group: True
    return lambda name, group: HttpGuard.may_read(identity, name, group)


def may_read(request: web.Request, name: str, group: bool = False) -> bool:
    """Whether the caller may read topic (or group) ``name``."""
    return reader(request)(name, group)
