"""The client protocol's session messages: tags 100-110.

Logging in and out of a tenant (`Authenticate` with an API key, a token or a delegated credential;
`Logout`), trading a token for a fresh one (`RefreshToken`), asking whether a permission is held
(`CheckPermission`), keeping the connection alive (`Heartbeat`, answered with the server's time)
and the event that ends a session when access is revoked (`PermissionRevoked`). Resuming a session
after a reconnect (111, 112) is with the variables (`client_variables.py`): it brings back the
subscriptions and the changes missed. `commy.messages.client` re-exports all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from commy.messages.base import Message, message

# --------------------------------------------------------------------------- sessions


@message(100)
@dataclass(frozen=True, slots=True)
class Authenticate(Message):
    """Open a session on `tenant`. `method`: `api_key` (credential = the key), `token` (a token from
    an earlier AuthenticationResponse) or `delegated` (passed to the tenant's auth hook)."""

    tenant: str
    method: str
    credential: str


@message(101)
@dataclass(frozen=True, slots=True)
class AuthenticationResponse(Message):
    tenant: str
    session_id: str
    client_id: str
    token: str
    expires_at: float
    permissions: tuple[str, ...]


@message(102)
@dataclass(frozen=True, slots=True)
class Logout(Message):
    """Close the session on `tenant` and revoke its token everywhere."""

    tenant: str


@message(103)
@dataclass(frozen=True, slots=True)
class LogoutResponse(Message):
    tenant: str


@message(104)
@dataclass(frozen=True, slots=True)
class RefreshToken(Message):
    """Trade a valid token for a new one with a fresh expiry; the old one is revoked."""

    token: str


@message(105)
@dataclass(frozen=True, slots=True)
class TokenRefreshResponse(Message):
    token: str
    expires_at: float


@message(106)
@dataclass(frozen=True, slots=True)
class CheckPermission(Message):
    tenant: str
    service: str
    permission: str


@message(107)
@dataclass(frozen=True, slots=True)
class PermissionResponse(Message):
    tenant: str
    service: str
    permission: str
    allowed: bool


@message(108)
@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    sent_at: float


@message(109)
@dataclass(frozen=True, slots=True)
class HeartbeatAck(Message):
    sent_at: float
    server_time: float


@message(110)
@dataclass(frozen=True, slots=True)
class PermissionRevoked(Message):
    """Event: the session on `tenant` is over; the client has no access there any more."""

    tenant: str
    reason: str
