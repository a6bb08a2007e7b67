"""Typed value encodings (the documented byte layouts) and the error classes by code."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commy.client import (
    CommyClientError,
    ConnectionLostError,
    ForbiddenError,
    NotFoundError,
    PermissionRevokedError,
    RateLimitedError,
    UnauthenticatedError,
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


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_int_is_8_byte_signed_little_endian(n: int) -> None:
    raw = encode_int(n)
    assert raw == struct.pack("<q", n) and decode_int(raw) == n


@given(st.floats(allow_nan=False))
def test_float_is_8_byte_ieee_little_endian(x: float) -> None:
    raw = encode_float(x)
    assert raw == struct.pack("<d", x) and decode_float(raw) == x


def test_float_nan_and_str_and_object() -> None:
    assert math.isnan(decode_float(encode_float(math.nan)))
    assert encode_str("é") == b"\xc3\xa9" and decode_str(b"\xc3\xa9") == "é"
    value = {"k": [1, -2, 3.5, "s", b"b", None, True], "nested": {"x": {}}}
    assert decode_object(encode_object(value)) == value


def test_wrong_shapes_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="64-bit"):
        encode_int(2**63)
    with pytest.raises(TypeError):
        encode_int("1")  # type: ignore[arg-type]
    for decode in (decode_int, decode_float):
        with pytest.raises(ValueTypeError, match="8 bytes"):
            decode(b"123")
    with pytest.raises(ValueTypeError, match="UTF-8"):
        decode_str(b"\xff")
    with pytest.raises(ValueTypeError):
        decode_object(b"\xc1")
    with pytest.raises(ValueError, match="MessagePack"):
        encode_object(object())
    assert issubclass(ValueTypeError, ValueError)


def test_errors_map_codes_to_classes() -> None:
    for code, cls in [("forbidden", ForbiddenError), ("not_found", NotFoundError),
                      ("unauthenticated", UnauthenticatedError), ("rate_limited", RateLimitedError)]:
        exc = CommyClientError.from_error(code, "why")
        assert type(exc) is cls and exc.code == code and exc.detail == "why" and str(exc) == f"{code}: why"
    unknown = CommyClientError.from_error("brand_new", "x")
    assert type(unknown) is CommyClientError and unknown.code == "brand_new"
    assert ConnectionLostError(detail="gone").code == "connection_lost"
    revoked = PermissionRevokedError(detail="bye", tenant="t")
    assert revoked.code == "revoked" and revoked.tenant == "t"
