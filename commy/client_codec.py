"""The client protocol's two wire forms: binary (msgpack) and text (JSON) WebSocket frames.

A binary frame is the msgpack array `[request_id, [tag, version, field, ...]]`: the message part is
exactly what the peer codec produces, so the same generated encoders and strict decoders serve
both protocols. A text frame is one JSON object: `"type"` (the message class name), `"id"` (the
request id, 0 for events) and every field by name; bytes travel as base64 strings, nested records
as objects, tuples as arrays, enums as their values. Text frames are decoded by turning the object
into the binary form's array and handing it to the same strict decoder, so both forms accept
exactly the same messages.

A `ClientCodec` decodes only the message types it is built to accept (the server: the client's
requests; the SDK: the server's replies and events), so a client cannot smuggle in a peer or local
message. Every decoding failure is a `FrameError` (a `RemoteProtocolError`) carrying the request id
when it could be read, so the error reply can still quote it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import json
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from commy.codec import Codec
from commy.errors import BAD_FRAME, BAD_REQUEST, UNKNOWN_MESSAGE, LocalProtocolError, RemoteProtocolError
from commy.messages import REGISTRY, Message
from commy.messages.client import CLIENT_REPLIES, CLIENT_REQUESTS

MAX_REQUEST_ID = (1 << 63) - 1


class FrameError(RemoteProtocolError):
    """A client frame that cannot be decoded; `request_id` is 0 when even that was unreadable."""

    def __init__(self, detail: str, code: str = BAD_FRAME, request_id: int = 0) -> None:
        super().__init__(detail, code)
        self.request_id = request_id


# A field's JSON shape: how to turn its JSON value into the binary form's value and back.
ToWire = Callable[[Any, str], Any]
ToJson = Callable[[Any], Any]


def _shape(tp: Any) -> tuple[ToWire, ToJson]:
    origin = typing.get_origin(tp)
    if tp is bytes:
        def bytes_in(v: Any, where: str) -> Any:
            if type(v) is not str:
                return v  # the strict decoder names the type error
            try:
                return base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raise RemoteProtocolError(f"{where}: not valid base64") from None
        return bytes_in, lambda v: base64.b64encode(v).decode("ascii")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return (lambda v, where: v), (lambda v: v.value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        names, shapes = _fields(tp)
        def record_in(v: Any, where: str) -> Any:
            return _object_to_list(v, names, shapes, f"{where} ({tp.__name__})")
        return record_in, lambda v: {n: s[1](getattr(v, n)) for n, s in zip(names, shapes, strict=True)}
    if origin is tuple:
        item_in, item_out = _shape(typing.get_args(tp)[0])
        def tuple_in(v: Any, where: str) -> Any:
            return [item_in(x, where + "[]") for x in v] if type(v) is list else v
        return tuple_in, lambda v: [item_out(x) for x in v]
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in typing.get_args(tp) if a is not type(None))
        inner_in, inner_out = _shape(inner)
        return (lambda v, where: None if v is None else inner_in(v, where)), (
            lambda v: None if v is None else inner_out(v))
    return (lambda v, where: v), (lambda v: v)


_FIELDS: dict[type, tuple[list[str], list[tuple[ToWire, ToJson]]]] = {}


def _fields(cls: type) -> tuple[list[str], list[tuple[ToWire, ToJson]]]:
    """Names and shapes of `cls`'s fields, worked out once per class (a simulated run makes many codecs)."""
    known = _FIELDS.get(cls)
    if known is None:
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        known = _FIELDS[cls] = (names, [_shape(hints[n]) for n in names])
    return known


def _object_to_list(obj: Any, names: list[str], shapes: list[tuple[ToWire, ToJson]], where: str) -> list[Any]:
    if type(obj) is not dict:
        raise RemoteProtocolError(f"{where}: expected an object, got {type(obj).__name__}")
    missing = [n for n in names if n not in obj]
    if missing:
        raise RemoteProtocolError(f"{where}: missing field {missing[0]!r}")
    return [shape[0](obj[n], f"{where}.{n}") for n, shape in zip(names, shapes, strict=True)]


class ClientCodec:
    """Encodes any client-protocol message; decodes only the types in `accept`."""

    def __init__(self, accept: Iterable[type[Message]]) -> None:
        self.accept = frozenset(accept)
        every = CLIENT_REQUESTS | CLIENT_REPLIES
        self._codec = Codec(every)
        self._accepted_tags = {cls.TAG for cls in self.accept}
        self._by_name = {cls.__name__: cls for cls in self.accept}
        self._json: dict[type, tuple[list[str], list[tuple[ToWire, ToJson]]]] = {cls: _fields(cls) for cls in every}
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        self._to_wire = self._codec.to_wire

    # ---- binary

    def encode_binary(self, request_id: int, msg: Message) -> bytes:
        return self._packer.pack([request_id, self._to_wire(msg)])

    def decode_binary(self, data: bytes) -> tuple[int, Message]:
        try:
            frame = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
        except Exception as exc:  # msgpack raises many types
            raise FrameError(f"not valid msgpack: {type(exc).__name__}") from None
        if type(frame) is not list or len(frame) != 2:
            raise FrameError("a binary frame is the array [request_id, [tag, version, fields...]]")
        request_id = _request_id(frame[0])
        return request_id, self._decode_body(request_id, frame[1])

    # ---- text

    def encode_text(self, request_id: int, msg: Message) -> str:
        names, shapes = self._json[type(msg)]
        obj: dict[str, Any] = {"type": type(msg).__name__, "id": request_id}
        for n, shape in zip(names, shapes, strict=True):
            obj[n] = shape[1](getattr(msg, n))
        return json.dumps(obj, separators=(",", ":"))

    def decode_text(self, text: str) -> tuple[int, Message]:
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise FrameError(f"not valid JSON: {type(exc).__name__}") from None
        if type(obj) is not dict:
            raise FrameError("a text frame is a JSON object with \"type\", \"id\" and the fields")
        request_id = _request_id(obj.get("id", 0))
        name = obj.get("type")
        cls = self._by_name.get(name) if type(name) is str else None
        if cls is None:
            raise FrameError(f"unknown or unexpected message type {str(name)[:40]!r}", UNKNOWN_MESSAGE, request_id)
        names, shapes = self._json[cls]
        extra = set(obj) - set(names) - {"type", "id"}
        if extra:
            raise FrameError(f"{cls.__name__}: unknown field {sorted(extra)[0][:40]!r}", BAD_REQUEST, request_id)
        try:
            body = [cls.TAG, cls.VERSION, *_object_to_list(obj, names, shapes, cls.__name__)]
        except RemoteProtocolError as exc:
            raise FrameError(exc.detail, exc.code, request_id) from None
        return request_id, self._decode_body(request_id, body)

    # ---- shared

    def _decode_body(self, request_id: int, body: Any) -> Message:
        if type(body) is list and body and type(body[0]) is int and body[0] not in self._accepted_tags:
            known = REGISTRY.get(body[0])
            what = f"{known.__name__} is not accepted here" if known else f"unknown message tag {body[0]}"
            raise FrameError(what, UNKNOWN_MESSAGE, request_id)
        try:
            return self._codec.from_wire(body)
        except RemoteProtocolError as exc:
            raise FrameError(exc.detail, exc.code, request_id) from None
        except RecursionError:
            raise FrameError("message nested too deeply", request_id=request_id) from None


def _request_id(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_REQUEST_ID:
        raise FrameError(f"request id must be an integer in 0..2**63-1, got {str(value)[:40]}")
    return value


def server_codec() -> ClientCodec:
    """The gateway's codec: decodes what clients may send."""
    return ClientCodec(CLIENT_REQUESTS)


def client_codec() -> ClientCodec:
    """The SDK's codec: decodes what servers send."""
    return ClientCodec(CLIENT_REPLIES)


def _check_registry() -> None:
    overlap = CLIENT_REQUESTS & CLIENT_REPLIES
    if overlap:
        raise LocalProtocolError(f"messages both sent and received by clients: {sorted(c.__name__ for c in overlap)}")


_check_registry()
