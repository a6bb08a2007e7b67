"""Error types shared by every layer.

Following h11, errors are split by whose fault they are. `LocalProtocolError` means our own code
misused an API (a bug here: it propagates). `RemoteProtocolError` means a peer or a client sent
something malformed or broke the protocol: the receiving side answers with a typed `Error` message
carrying `code`, closes that link or session, and keeps serving everyone else.
"""

from __future__ import annotations


class CommyError(Exception):
    """Base class of every error commy raises on purpose."""


class LocalProtocolError(CommyError):
    """Our own code broke a contract (wrong type passed, message not registered, ...)."""


class RemoteProtocolError(CommyError):
    """A peer or client sent bytes or messages that break the protocol."""

    def __init__(self, detail: str, code: str = "bad_request") -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


# Stable error codes carried by `Error` messages; peers and clients may switch on them.
BAD_REQUEST = "bad_request"
BAD_FRAME = "bad_frame"
TOO_LARGE = "too_large"
UNKNOWN_MESSAGE = "unknown_message"
UNAUTHENTICATED = "unauthenticated"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
RATE_LIMITED = "rate_limited"
EXPIRED = "expired"
TIMEOUT = "timeout"
INTERNAL = "internal"
UNAVAILABLE = "unavailable"  # not enough replicas reachable (a write concern cannot be met): nothing written
OUTCOME_UNKNOWN = "outcome_unknown"  # applied here; whether the replicas have it is not known
