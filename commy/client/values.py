"""Typed values: how ints, floats, text and objects are stored as bytes, and the typed getters and setters.

Typed values are plain bytes on the wire and in the service file, encoded as documented here so
any client in any language can read them: int = 8-byte signed little-endian two's complement,
float = 8-byte IEEE 754 binary64 little-endian, str = UTF-8, object = MessagePack (bin type on,
strings as str). A stored value of the wrong shape raises `ValueTypeError` (also a ValueError).
`AsyncTyped` and `SyncTyped` add `get_int` / `set_int` and friends to any class with a `get` and
a `set` of bytes (the async and the blocking service handles).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import msgpack

from commy.errors import CommyError


class ValueTypeError(CommyError, ValueError):
    """A stored value does not have the shape the typed getter expects."""


# --------------------------------------------------------------------------- typed values

_F64 = struct.Struct("<d")


def encode_int(value: int) -> bytes:
    """8-byte signed little-endian; refuses values outside -2**63 .. 2**63-1."""
    if not isinstance(value, int):
        raise TypeError(f"set_int needs an int, not {type(value).__name__}")
    try:
        return int(value).to_bytes(8, "little", signed=True)
    except OverflowError:
        raise ValueError(f"{value} does not fit in a signed 64-bit integer") from None


def decode_int(raw: bytes) -> int:
    if len(raw) != 8:
        raise ValueTypeError(f"an int value is 8 bytes, this one has {len(raw)}")
    return int.from_bytes(raw, "little", signed=True)


def encode_float(value: float) -> bytes:
    """8-byte IEEE 754 binary64, little-endian."""
    return _F64.pack(value)


def decode_float(raw: bytes) -> float:
    if len(raw) != 8:
        raise ValueTypeError(f"a float value is 8 bytes, this one has {len(raw)}")
    result: float = _F64.unpack(raw)[0]
    return result


def encode_str(value: str) -> bytes:
    return value.encode("utf-8")


def decode_str(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueTypeError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def encode_object(value: Any) -> bytes:
    """MessagePack with the bin type on (bytes stay bytes, str stays str)."""
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"cannot encode as MessagePack: {exc}") from None
    return packed


def decode_object(raw: bytes) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many types
        raise ValueTypeError(f"not a MessagePack value: {type(exc).__name__}") from None


# --------------------------------------------------------------------------- typed access mixins


class AsyncTyped:
    """`get_int` / `set_int` and friends over an async `get` / `set` of bytes."""

    if TYPE_CHECKING:  # provided by the class that mixes this in
        async def get(self, name: str) -> bytes | None: ...
        async def set(self, name: str, value: bytes, *, concern: str = "") -> int: ...

    async def get_int(self, name: str) -> int | None:
        raw = await self.get(name)
        return None if raw is None else decode_int(raw)

    async def set_int(self, name: str, value: int, *, concern: str = "") -> int:
        return await self.set(name, encode_int(value), concern=concern)

    async def get_float(self, name: str) -> float | None:
        raw = await self.get(name)
        return None if raw is None else decode_float(raw)

    async def set_float(self, name: str, value: float, *, concern: str = "") -> int:
        return await self.set(name, encode_float(value), concern=concern)

    async def get_str(self, name: str) -> str | None:
        raw = await self.get(name)
        return None if raw is None else decode_str(raw)

    async def set_str(self, name: str, value: str, *, concern: str = "") -> int:
        return await self.set(name, encode_str(value), concern=concern)

    async def get_bytes(self, name: str) -> bytes | None:
        return await self.get(name)

    async def set_bytes(self, name: str, value: bytes, *, concern: str = "") -> int:
        return await self.set(name, bytes(value), concern=concern)

    async def get_object(self, name: str, default: Any = None) -> Any:
        raw = await self.get(name)
        return default if raw is None else decode_object(raw)

    async def set_object(self, name: str, value: Any, *, concern: str = "") -> int:
        return await self.set(name, encode_object(value), concern=concern)


class SyncTyped:
    """The blocking twin of `AsyncTyped`."""

    if TYPE_CHECKING:  # provided by the class that mixes this in
        def get(self, name: str) -> bytes | None: ...
        def set(self, name: str, value: bytes, *, concern: str = "") -> int: ...

    def get_int(self, name: str) -> int | None:
        raw = self.get(name)
        return None if raw is None else decode_int(raw)

    def set_int(self, name: str, value: int, *, concern: str = "") -> int:
        return self.set(name, encode_int(value), concern=concern)

    def get_float(self, name: str) -> float | None:
        raw = self.get(name)
        return None if raw is None else decode_float(raw)

    def set_float(self, name: str, value: float, *, concern: str = "") -> int:
        return self.set(name, encode_float(value), concern=concern)

    def get_str(self, name: str) -> str | None:
        raw = self.get(name)
        return None if raw is None else decode_str(raw)

    def set_str(self, name: str, value: str, *, concern: str = "") -> int:
        return self.set(name, encode_str(value), concern=concern)

    def get_bytes(self, name: str) -> bytes | None:
        return self.get(name)

    def set_bytes(self, name: str, value: bytes, *, concern: str = "") -> int:
        return self.set(name, bytes(value), concern=concern)

    def get_object(self, name: str, default: Any = None) -> Any:
        raw = self.get(name)
        return default if raw is None else decode_object(raw)

    def set_object(self, name: str, value: Any, *, concern: str = "") -> int:
        return self.set(name, encode_object(value), concern=concern)
