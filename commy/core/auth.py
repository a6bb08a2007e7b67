"""Signed session tokens and the failed-login lockout.

A token is `v1.<payload>.<signature>`: the payload is base64url (no padding) of the msgpack array
`[token_id, client_id, issued_at, expires_at]`, and the signature is base64url of HMAC-SHA256,
under the cluster key, of everything before the last dot. Every node holds the cluster key, so
any node verifies any token without asking anyone; revocation (logout) is a catalog record.
`verify` checks the length, the shape and the signature before it parses a byte of the payload,
and whatever it is given it raises nothing but `RemoteProtocolError` with code `unauthenticated`
("invalid token") or `expired` ("token expired").

`Lockout` counts failures per subject (a client id, a key id, an address: the caller decides) in
a sliding window; `max_failures` of them within `window` seconds lock the subject for `lock_for`
seconds. Its memory is bounded: past `max_subjects` it forgets expired locks, then the subjects
that failed longest ago, and only then the oldest locks, so spraying fresh subjects evicts the
sprayer's own entries before anyone's lock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
from collections import OrderedDict
from dataclasses import dataclass

import msgpack

from commy.errors import EXPIRED, UNAUTHENTICATED, RemoteProtocolError

TOKEN_VERSION = "v1"
MAX_TOKEN_LENGTH = 1024
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes | None:
    """Strict unpadded base64url: None unless `text` is the one canonical encoding of its bytes."""
    # The stdlib decoder skips characters outside the alphabet and ignores stray low bits; either
    # would let many strings stand for one key or signature.
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return data if b64url_encode(data) == text else None


@dataclass(frozen=True, slots=True)
class TokenClaims:
    token_id: str
    client_id: str
    issued_at: float
    expires_at: float


class TokenSigner:
    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) < 32:
            raise ValueError("the token signing key must be at least 32 bytes")
        self._key = key

    def _mac(self, signed: str) -> bytes:
        return hmac.new(self._key, signed.encode("ascii"), hashlib.sha256).digest()

    def issue(self, client_id: str, token_id: str, now: float, ttl: float = 3600.0) -> str:
        if not 0 < ttl < math.inf:
            raise ValueError(f"token ttl must be a finite number > 0, got {ttl}")
        payload = msgpack.packb([token_id, client_id, float(now), float(now + ttl)], use_bin_type=True)
        signed = f"{TOKEN_VERSION}.{b64url_encode(payload)}"
        token = f"{signed}.{b64url_encode(self._mac(signed))}"
        if len(token) > MAX_TOKEN_LENGTH:  # verify would refuse it: fail here, where the bug is
            raise ValueError(f"token for client {client_id[:64]!r} would be {len(token)} chars")
        return token

    def verify(self, token: str, now: float) -> TokenClaims:
        claims = self._authentic_claims(token)
        if claims is None:
            raise RemoteProtocolError("invalid token", UNAUTHENTICATED)
        if now >= claims.expires_at:
            raise RemoteProtocolError("token expired", EXPIRED)
        return claims

    def _authentic_claims(self, token: object) -> TokenClaims | None:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            return None
        signed, dot, sig_text = token.rpartition(".")
        version, dot2, body = signed.partition(".")
        if not dot or not dot2 or version != TOKEN_VERSION:
            return None
        sig = b64url_decode(sig_text)
        if sig is None or not hmac.compare_digest(sig, self._mac(signed)):
            return None
        payload = b64url_decode(body)
        if payload is None:
            return None
        try:
            fields = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
        except Exception:  # msgpack raises many types; a signed payload never gets here anyway
            return None
        if not isinstance(fields, list) or [type(f) for f in fields] != [str, str, float, float]:
            return None
        token_id, client_id, issued_at, expires_at = fields
        if not token_id or not client_id or math.isnan(expires_at):
            return None
        return TokenClaims(token_id, client_id, issued_at, expires_at)


class Lockout:
    def __init__(self, max_failures: int = 5, window: float = 300.0, lock_for: float = 300.0,
                 max_subjects: int = 10_000) -> None:
        if max_failures < 1 or max_subjects < 1:
            raise ValueError(f"lockout needs max_failures and max_subjects >= 1, got {max_failures}, {max_subjects}")
        if not (0 < window < math.inf and 0 < lock_for < math.inf):
            raise ValueError(f"lockout window and lock_for must be finite and > 0, got {window}, {lock_for}")
        self.max_failures = max_failures
        self.window = window
        self.lock_for = lock_for
        self.max_subjects = max_subjects
        # Both in least-recent-first order; since lock_for is fixed, `_locked` is also in expiry order.
        self._failing: OrderedDict[str, list[float]] = OrderedDict()
        self._locked: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failing) + len(self._locked)

    def locked_until(self, subject: str, now: float) -> float | None:
        until = self._locked.get(subject)
        if until is None:
            return None
        if now < until:
            return until
        del self._locked[subject]
        return None

    def failure(self, subject: str, now: float) -> bool:
        """Count a failed attempt; True when this one locks the subject."""
        if self.locked_until(subject, now) is not None:
            return False  # attempts while locked do not extend the lock: a guesser cannot pin a victim
        recent = [t for t in self._failing.pop(subject, []) if t > now - self.window]
        recent.append(now)
        locks = len(recent) >= self.max_failures
        if locks:
            self._locked[subject] = now + self.lock_for
        else:
            self._failing[subject] = recent
        self._trim(now)
        return locks

    def success(self, subject: str) -> None:
        self._failing.pop(subject, None)
        self._locked.pop(subject, None)

    def _trim(self, now: float) -> None:
        while self._locked and next(iter(self._locked.values())) <= now:
            self._locked.popitem(last=False)
        while len(self) > self.max_subjects:
            (self._failing or self._locked).popitem(last=False)
