"""The SDK's exceptions: `CommyClientError` and a subclass per error code.

Every request answered with `Error(code, detail)` raises `CommyClientError` (or the subclass
registered for its code: `ForbiddenError` for `forbidden`, ...), so callers may catch a class or
switch on `.code`. A subclass registers itself for its `CODE` when it is defined. Failures of the
SDK's own making have codes of their own: `connection_lost` (the request was in flight when the
connection dropped; it may or may not have been applied), `timeout` (no reply in time), `revoked`
(the session ended: PermissionRevoked), `not_local` (a local-only operation on a service that is
not mapped).
"""

from __future__ import annotations

from typing import Any, ClassVar

from commy.errors import CommyError

CONNECTION_LOST = "connection_lost"
REVOKED = "revoked"
NOT_LOCAL = "not_local"


class CommyClientError(CommyError):
    """A request failed: `code` is a stable string (see `commy.errors`) and `detail` says why.

    `CommyClientError.from_error(code, detail)` builds the subclass registered for `code`; each
    subclass fills in its own code when none is given (`ForbiddenError(detail="...")`).
    """

    BY_CODE: ClassVar[dict[str, type[CommyClientError]]] = {}
    CODE: ClassVar[str] = "error"

    def __init__(self, code: str | None = None, detail: str = "") -> None:
        code = type(self).CODE if code is None else code
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code: str = code
        self.detail: str = detail

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        CommyClientError.BY_CODE.setdefault(cls.CODE, cls)

    @classmethod
    def from_error(cls, code: str, detail: str) -> CommyClientError:
        """The exception for a server's `Error(code, detail)`: the subclass for `code` if there is one."""
        return cls.BY_CODE.get(code, CommyClientError)(code, detail)


class ConnectionLostError(CommyClientError):
    """The connection dropped with the request in flight (or no connection could be made)."""

    CODE = CONNECTION_LOST


class RequestTimeoutError(CommyClientError):
    """No reply came within the request's timeout."""

    CODE = "timeout"


class PermissionRevokedError(CommyClientError):
    """The session on `tenant` ended (access revoked, tenant deleted, token expired)."""

    CODE = REVOKED

    def __init__(self, code: str | None = None, detail: str = "", tenant: str = "") -> None:
        super().__init__(code, detail)
        self.tenant = tenant


class NotLocalError(CommyClientError):
    """A local-only operation on a service this client has not mapped (or may not map)."""

    CODE = NOT_LOCAL


class UnauthenticatedError(CommyClientError):
    """Not authenticated on the tenant (or bad credentials)."""

    CODE = "unauthenticated"


class ForbiddenError(CommyClientError):
    """The session lacks the permission (or, for MapService, the client is not on the server's machine)."""

    CODE = "forbidden"


class NotFoundError(CommyClientError):
    """No such tenant, service or key."""

    CODE = "not_found"


class BadRequestError(CommyClientError):
    """The server refused the request as malformed."""

    CODE = "bad_request"


class TooLargeError(CommyClientError):
    """A value or frame over the server's limit."""

    CODE = "too_large"


class RateLimitedError(CommyClientError):
    """Too many attempts (failed logins, writers); retry later."""

    CODE = "rate_limited"


class ExpiredError(CommyClientError):
    """The token expired."""

    CODE = "expired"
