"""What the SDK hands back and raises: sessions, subscriptions, errors by code, typed values.

`Session` (an authenticated session on one tenant) is defined here; the rest lives in its own
module and is re-exported here, where the SDK and its users import it from: the exceptions, one
per error code, in `errors.py`; `Subscription` (changes in order, each delivered once, across
reconnections) in `subscription.py`; the typed value encodings (int, float, str, object) and the
typed getters and setters in `values.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from commy.client.errors import (
    CONNECTION_LOST,
    NOT_LOCAL,
    REVOKED,
    BadRequestError,
    CommyClientError,
    ConnectionLostError,
    ExpiredError,
    ForbiddenError,
    NotFoundError,
    NotLocalError,
    PermissionRevokedError,
    RateLimitedError,
    RequestTimeoutError,
    TooLargeError,
    UnauthenticatedError,
)
from commy.client.subscription import ChangeCallback, EndCallback, Item, Subscription, SubscriptionEnd
from commy.client.values import (
    AsyncTyped,
    SyncTyped,
    ValueTypeError,
    decode_float,
    decode_int,
    decode_object,
    decode_str,
    encode_float,
    encode_int,
    encode_object,
    encode_str,
)

__all__ = [
    "CONNECTION_LOST", "NOT_LOCAL", "REVOKED", "AsyncTyped", "BadRequestError", "ChangeCallback", "CommyClientError",
    "ConnectionLostError", "EndCallback", "ExpiredError", "ForbiddenError", "Item", "NotFoundError", "NotLocalError",
    "PermissionRevokedError", "RateLimitedError", "RequestTimeoutError", "Session", "Subscription", "SubscriptionEnd",
    "SyncTyped", "TooLargeError", "UnauthenticatedError", "ValueTypeError", "decode_float", "decode_int",
    "decode_object", "decode_str", "encode_float", "encode_int", "encode_object", "encode_str",
]



@dataclass(frozen=True, slots=True)
class Session:
    """An authenticated session on one tenant (`""` is the server-wide admin session).

    `expires_at` is on the server's clock (the client refreshes the token before then);
    `permissions` are the permission names the server granted (`variable_read`, ...)."""

    tenant: str
    session_id: str
    client_id: str
    token: str
    expires_at: float
    permissions: tuple[str, ...]

    def allows(self, permission: str) -> bool:
        """Whether the session's permissions (as the server reported them) include `permission`."""
        perms = self.permissions
        return permission in perms or "tenant_admin" in perms or (
            permission.startswith(("variable_", "service_", "subscribe")) and "service_admin" in perms)
