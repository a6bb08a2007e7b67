"""Signed tokens (issue, verify, expiry, tampering, garbage) and the failed-login lockout."""

from __future__ import annotations

import base64
import hashlib
import hmac

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from commy.core.auth import MAX_TOKEN_LENGTH, Lockout, TokenClaims, TokenSigner, b64url_decode, b64url_encode
from commy.errors import EXPIRED, UNAUTHENTICATED, RemoteProtocolError

KEY = bytes(range(32))
SIGNER = TokenSigner(KEY)
TOKEN = SIGNER.issue("alice", "t-1", now=1000.0, ttl=60.0)


def refused(token: object, now: float = 1000.0, signer: TokenSigner = SIGNER) -> str:
    with pytest.raises(RemoteProtocolError) as err:
        signer.verify(token, now)  # type: ignore[arg-type]
    assert (err.value.code, err.value.detail) in {(UNAUTHENTICATED, "invalid token"), (EXPIRED, "token expired")}
    return err.value.code


def forge(payload: object, key: bytes = KEY, version: str = "v1") -> str:
    signed = f"{version}.{b64url_encode(msgpack.packb(payload))}"
    return f"{signed}.{b64url_encode(hmac.new(key, signed.encode(), hashlib.sha256).digest())}"


# ---- base64url


@given(st.binary(max_size=64))
def test_b64url_round_trips_without_padding(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text and b64url_decode(text) == data


@pytest.mark.parametrize("text", ["A", "AB=", "AB==", "A+B/", "AB C", "ABé", "AB\n", "AF"])
def test_b64url_decode_is_strict(text: str) -> None:
    assert b64url_decode(text) is None  # "AF" has stray low bits: "AA" is the canonical form of b"\0"


# ---- tokens


def test_issue_and_verify() -> None:
    assert TOKEN.startswith("v1.") and TOKEN.count(".") == 2
    assert SIGNER.verify(TOKEN, 1059.9) == TokenClaims("t-1", "alice", 1000.0, 1060.0)
    assert TokenSigner(KEY).verify(TOKEN, 1000.0).client_id == "alice"  # any node with the key


def test_the_signature_covers_the_version_and_payload() -> None:
    signed, _, sig = TOKEN.rpartition(".")
    assert b64url_decode(sig) == hmac.new(KEY, signed.encode(), hashlib.sha256).digest()
    body = TOKEN.split(".")[1]
    assert msgpack.unpackb(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) == ["t-1", "alice", 1000.0, 1060.0]


def test_expiry() -> None:
    assert refused(TOKEN, now=1060.0) == EXPIRED
    assert refused(TOKEN, now=1e9) == EXPIRED


def test_wrong_key_and_wrong_version() -> None:
    assert refused(TOKEN, signer=TokenSigner(b"k" * 32)) == UNAUTHENTICATED
    assert refused(forge(["t", "alice", 1.0, 2000.0], version="v2")) == UNAUTHENTICATED
    assert refused("v2" + TOKEN[2:]) == UNAUTHENTICATED


def test_a_signed_payload_of_the_wrong_shape_is_refused() -> None:
    assert SIGNER.verify(forge(["t", "alice", 1.0, 2000.0]), 1000.0).token_id == "t"
    for payload in (["t", "alice", 1.0], ["t", "alice", 1, 2000], ["", "alice", 1.0, 2000.0], {"t": 1},
                    ["t", "alice", 1.0, float("nan")], ["t", b"alice", 1.0, 2000.0], ["t", "a", True, 2000.0]):
        assert refused(forge(payload)) == UNAUTHENTICATED, payload
    signed = "v1." + b64url_encode(b"\xc1 not msgpack")
    sig = b64url_encode(hmac.new(KEY, signed.encode(), hashlib.sha256).digest())
    assert refused(f"{signed}.{sig}") == UNAUTHENTICATED


def test_oversize_tokens_are_refused_before_anything_else() -> None:
    assert refused(TOKEN + "A" * MAX_TOKEN_LENGTH) == UNAUTHENTICATED
    with pytest.raises(ValueError, match="would be"):
        SIGNER.issue("x" * 2000, "t", 0.0)


def test_bad_signer_arguments() -> None:
    with pytest.raises(ValueError):
        TokenSigner(b"short")
    with pytest.raises(ValueError):
        SIGNER.issue("a", "t", 0.0, ttl=0)


@given(st.data())
def test_flipping_any_character_invalidates_the_token(data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(TOKEN) - 1))
    mask = data.draw(st.integers(1, 0x7F))
    tampered = TOKEN[:i] + chr(ord(TOKEN[i]) ^ mask) + TOKEN[i + 1:]
    assert refused(tampered) == UNAUTHENTICATED


@given(st.data())
def test_truncating_or_extending_invalidates_the_token(data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(TOKEN) - 1))
    extra = data.draw(st.text(min_size=1, max_size=8))
    assert refused(TOKEN[:cut]) == UNAUTHENTICATED
    assert refused(TOKEN + extra) == UNAUTHENTICATED


B64 = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=80)


@given(st.one_of(st.text(max_size=1200), st.builds("v1.{}.{}".format, B64, B64), st.binary(max_size=40), st.none(),
                 st.integers()), st.floats(allow_nan=False))
def test_garbage_only_ever_raises_unauthenticated(garbage: object, now: float) -> None:
    assert refused(garbage, now) == UNAUTHENTICATED


# ---- lockout


def test_locks_after_max_failures_in_the_window_and_unlocks_after_lock_for() -> None:
    lock = Lockout()
    assert [lock.failure("alice", 100.0 + i) for i in range(5)] == [False] * 4 + [True]
    assert lock.locked_until("alice", 104.0) == lock.locked_until("alice", 403.9) == 404.0
    assert lock.locked_until("bob", 104.0) is None
    assert lock.failure("alice", 200.0) is False and lock.locked_until("alice", 200.0) == 404.0  # not extended
    assert lock.locked_until("alice", 404.0) is None
    assert [lock.failure("alice", 500.0 + i) for i in range(5)] == [False] * 4 + [True]  # counting starts afresh


def test_failures_older_than_the_window_do_not_count() -> None:
    lock = Lockout(max_failures=3, window=10.0)
    assert [lock.failure("a", t) for t in (0.0, 5.0, 10.0, 16.0)] == [False, False, False, False]
    assert lock.failure("a", 16.5) is True  # 10.0, 16.0 and 16.5 are within 10 s


def test_success_resets() -> None:
    lock = Lockout()
    for i in range(4):
        lock.failure("alice", float(i))
    lock.success("alice")
    assert [lock.failure("alice", 10.0 + i) for i in range(5)] == [False] * 4 + [True]
    lock.success("alice")
    assert lock.locked_until("alice", 15.0) is None and len(lock) == 0


def test_memory_is_bounded_and_spraying_evicts_the_sprayer_before_any_lock() -> None:
    lock = Lockout(max_subjects=100)
    for i in range(5):
        lock.failure("victim", float(i))
    for i in range(10_000):
        lock.failure(f"spray-{i}", 10.0 + i * 0.001)
        assert len(lock) <= 100
    assert lock.locked_until("victim", 30.0) == 304.0
    assert lock.failure("spray-9999", 30.0) is False  # still counting the newest ones


def test_when_every_entry_is_a_lock_the_oldest_lock_goes_and_expired_locks_go_first() -> None:
    lock = Lockout(max_failures=1, max_subjects=3, lock_for=100.0)
    for i, who in enumerate("abcd"):
        assert lock.failure(who, float(i)) is True
    assert len(lock) == 3 and lock.locked_until("a", 3.0) is None and lock.locked_until("b", 3.0) == 101.0
    lock.failure("e", 250.0)  # every older lock has expired by now
    assert len(lock) == 1


def test_bad_lockout_arguments() -> None:
    for kwargs in ({"max_failures": 0}, {"window": 0.0}, {"lock_for": float("inf")}, {"max_subjects": 0}):
        with pytest.raises(ValueError):
            Lockout(**kwargs)
