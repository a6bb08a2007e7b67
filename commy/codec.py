"""MessagePack encoding of registered messages, with strict decoding.

At construction the codec walks each registered class's field annotations once and generates
(with `exec`) one encoder and one decoder function per class and per nested record type. An
encoder turns a message into a flat list `[tag, version, field, ...]` (enums by value, records as
nested lists) that msgpack packs without a dict in sight; the decoder checks every field's wire type
and rebuilds the frozen dataclass. Anything malformed -- not msgpack, wrong shape, unknown tag or
version, a field of the wrong type, a bad enum value -- raises `RemoteProtocolError` saying what was
wrong, and never another exception type.

An envelope travels as `[msg_id, request_id, sender.node, sender.name, receiver.node,
receiver.name, sent_at, body]` with `body` the message's list.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import reprlib
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from commy.errors import LocalProtocolError, RemoteProtocolError
from commy.messages import REGISTRY, WIRE, Address, Envelope, Message, fast_constructor, new_envelope

# The envelope decoder calls it bare: msgpack >= 1.0's defaults are exactly what `_unpack` spells
# out (raw=False, strict_map_key=True, use_list=True), and keyword parsing costs per message.
_unpackb = msgpack.unpackb

_PRIMITIVES: dict[type, str] = {int: "int", str: "str", bytes: "bytes", bool: "bool", float: "float"}

# A bounded repr: a hostile value (lists nested ~1000 deep, a huge array) must not make the error
# message itself fail with RecursionError or take long to build.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 6, 4, 60, 60


def _bad(where: str, expected: str, value: object) -> RemoteProtocolError:
    shown = _REPR.repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return RemoteProtocolError(f"{where}: expected {expected}, got {type(value).__name__} {shown}")


class _Generator:
    """Builds the source of encoder/decoder functions; shares one namespace for helpers."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {"_bad": _bad, "RPE": RemoteProtocolError}
        self.lines: list[str] = []
        self.record_names: dict[type, str] = {}
        self.counter = 0

    def _name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # ---- per-type expressions. `enc(t, v)` returns an expression that encodes v;
    # ---- `dec(t, v, where, out)` returns statements that validate v and assign the result to out.

    def enc(self, tp: Any, v: str) -> str:
        origin = typing.get_origin(tp)
        if tp in _PRIMITIVES:
            return v
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return f"{v}._value_"  # `.value` is a Python-level property, several times slower
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return f"{self.record(tp)[0]}({v})"
        if origin in (typing.Union, types.UnionType):
            inner = self._optional_inner(tp)
            inner_expr = self.enc(inner, v)
            return v if inner_expr == v else f"(None if {v} is None else {inner_expr})"
        if origin is tuple:
            item = self._tuple_item(tp)
            item_expr = self.enc(item, "_x")
            return f"list({v})" if item_expr == "_x" else f"[{item_expr} for _x in {v}]"
        if origin is dict:
            k, val = typing.get_args(tp)
            if k not in (str, bytes):  # the decoder unpacks with strict_map_key: only str/bytes keys
                raise LocalProtocolError(f"dict keys must be str or bytes, got {k}")
            val_expr = self.enc(val, "_v")
            return v if val_expr == "_v" else f"{{_k: {val_expr} for _k, _v in {v}.items()}}"
        raise LocalProtocolError(f"codec cannot encode type {tp!r}")

    def dec(self, tp: Any, v: str, where: str, out: str, indent: str) -> list[str]:
        origin = typing.get_origin(tp)
        w = repr(where)
        if tp is float:
            return [
                f"{indent}if type({v}) is not float:",
                f"{indent}    if type({v}) is not int: raise _bad({w}, 'float', {v})",
                f"{indent}    {v} = float({v})",
                f"{indent}{out} = {v}",
            ]
        if tp in _PRIMITIVES:
            name = _PRIMITIVES[tp]
            return [f"{indent}if type({v}) is not {name}: raise _bad({w}, {name!r}, {v})", f"{indent}{out} = {v}"]
        if tp is type(None):
            return [f"{indent}if {v} is not None: raise _bad({w}, 'nil', {v})", f"{indent}{out} = None"]
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            # A dict lookup is 5x faster than Enum(value); values are str or int, so hashable.
            ename = self._name("_E")
            self.ns[ename] = {m.value: m for m in tp}
            allowed = repr("one of " + ", ".join(sorted(str(m.value) for m in tp)))
            return [
                f"{indent}{out} = {ename}.get({v}) if type({v}) is str or type({v}) is int else None",
                f"{indent}if {out} is None: raise _bad({w}, {allowed}, {v})",
            ]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return [f"{indent}{out} = {self.record(tp)[1]}({v}, {w})"]
        if origin in (typing.Union, types.UnionType):
            inner = self._optional_inner(tp)
            return [
                f"{indent}if {v} is None: {out} = None",
                f"{indent}else:",
                *self.dec(inner, v, where, out, indent + "    "),
            ]
        if origin is tuple:
            item = self._tuple_item(tp)
            acc = self._name("_acc")
            x = self._name("_x")
            return [
                f"{indent}if type({v}) is not list: raise _bad({w}, 'array', {v})",
                f"{indent}{acc} = []",
                f"{indent}for {x} in {v}:",
                *self.dec(item, x, where + "[]", x, indent + "    "),
                f"{indent}    {acc}.append({x})",
                f"{indent}{out} = tuple({acc})",
            ]
        if origin is dict:
            kt, vt = typing.get_args(tp)
            acc, k, x = self._name("_acc"), self._name("_k"), self._name("_x")
            return [
                f"{indent}if type({v}) is not dict: raise _bad({w}, 'map', {v})",
                f"{indent}{acc} = {{}}",
                f"{indent}for {k}, {x} in {v}.items():",
                *self.dec(kt, k, where + " key", k, indent + "    "),
                *self.dec(vt, x, where + " value", x, indent + "    "),
                f"{indent}    {acc}[{k}] = {x}",
                f"{indent}{out} = {acc}",
            ]
        raise LocalProtocolError(f"codec cannot decode type {tp!r}")

    @staticmethod
    def _optional_inner(tp: Any) -> Any:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(tp)) != 2:
            raise LocalProtocolError(f"only `X | None` unions are supported, got {tp!r}")
        return args[0]

    @staticmethod
    def _tuple_item(tp: Any) -> Any:
        args = typing.get_args(tp)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise LocalProtocolError(f"only tuple[X, ...] is supported, got {tp!r}")
        return args[0]

    # ---- whole classes

    def _fields(self, cls: type) -> list[tuple[str, Any]]:
        hints = typing.get_type_hints(cls)
        return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]

    def record(self, cls: type) -> tuple[str, str]:
        """Encoder/decoder names for a nested record (a dataclass that is not a message)."""
        if cls in self.record_names:
            return self.record_names[cls], "_d" + self.record_names[cls][2:]
        enc_name = self._name("_er")
        dec_name = "_d" + enc_name[2:]
        self.record_names[cls] = enc_name
        fields = self._fields(cls)
        items = ", ".join(self.enc(t, f"m.{n}") for n, t in fields)
        self.lines += [f"def {enc_name}(m):", f"    return [{items}]", ""]
        body = self._decode_fields(cls.__name__, fields, "a", 0)
        self.lines += [
            f"def {dec_name}(a, where):",
            "    if type(a) is not list: raise _bad(where, 'array', a)",
            f"    if len(a) != {len(fields)}:",
            f"        raise RPE(f'{{where}}: {cls.__name__} has {len(fields)} fields, got {{len(a)}}')",
            *body,
            *self.construct(cls, fields),
            "",
        ]
        return enc_name, dec_name

    def _decode_fields(self, owner: str, fields: list[tuple[str, Any]], arr: str, start: int) -> list[str]:
        out: list[str] = []
        for i, (n, t) in enumerate(fields):
            out.append(f"    v = {arr}[{start + i}]")
            out += self.dec(t, "v", f"{owner}.{n}", f"f_{n}", "    ")
        return out

    def message(self, cls: type[Message]) -> tuple[str, str]:
        fields = self._fields(cls)
        enc_name, dec_name = f"enc_{cls.TAG}", f"dec_{cls.TAG}"
        items = "".join(", " + self.enc(t, f"m.{n}") for n, t in fields)
        self.lines += [f"def {enc_name}(m):", f"    return [{cls.TAG}, {cls.VERSION}{items}]", ""]
        self.lines += [
            f"def {dec_name}(a):",
            f"    if len(a) != {len(fields) + 2}:",
            f"        raise RPE('{cls.__name__} has {len(fields)} fields, got ' + str(len(a) - 2))",
            *self._decode_fields(cls.__name__, fields, "a", 2),
            *self.construct(cls, fields),
            "",
        ]
        return enc_name, dec_name

    def construct(self, cls: type, fields: list[tuple[str, Any]]) -> list[str]:
        """The statement that builds `cls` from the decoded `f_<field>` locals and returns it."""
        name = self._name("_new")
        self.ns[name] = fast_constructor(cls)  # the frozen __init__ is the costliest step of a decode
        return [f"    return {name}({', '.join('f_' + n for n, _ in fields)})"]

    def build(self) -> dict[str, Any]:
        exec(compile("\n".join(self.lines), "<commy.codec generated>", "exec"), self.ns)
        return self.ns


@functools.lru_cache(maxsize=32)
def _generated(classes: tuple[type[Message], ...]) -> tuple[dict[type, tuple[str, str]], dict[str, Any]]:
    """The generated encoder/decoder names and functions for a set of classes. They are pure, so
    every codec over the same classes shares them (a simulated cluster builds dozens of codecs)."""
    gen = _Generator()
    names = {cls: gen.message(cls) for cls in classes}
    return names, gen.build()


class Codec:
    """Encodes and strictly decodes registered messages and envelopes.

    Not thread-safe (it reuses one msgpack Packer); give each thread its own codec.
    """

    def __init__(self, classes: Iterable[type[Message]] | None = None, *, decode_local: bool = False) -> None:
        self.classes = list(REGISTRY.values() if classes is None else classes)
        # Local-only messages (timers, link events) are encodable for traces, but a peer must
        # never be able to inject one: by default their tags are unknown to the decoder.
        decodable = {cls for cls in self.classes if decode_local or getattr(cls, "SCOPE", WIRE) == WIRE}
        names, ns = _generated(tuple(self.classes))
        self._addresses: dict[tuple[str, str], Address] = {}
        self._encoders: dict[type, Callable[[Message], list[Any]]] = {
            cls: ns[e] for cls, (e, _) in names.items()
        }
        self._decoders: dict[int, tuple[int, str, Callable[[list[Any]], Message]]] = {
            cls.TAG: (cls.VERSION, cls.__name__, ns[d]) for cls, (_, d) in names.items() if cls in decodable
        }
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        self._packer_pack = self._packer.pack

    # ---- messages alone

    def to_wire(self, msg: Message) -> list[Any]:
        try:
            enc = self._encoders[type(msg)]
        except KeyError:
            raise LocalProtocolError(f"{type(msg).__name__} is not a registered message") from None
        return enc(msg)

    def from_wire(self, body: Any) -> Message:
        if type(body) is not list or len(body) < 2:
            raise _bad("message", "array [tag, version, fields...]", body)
        tag, version = body[0], body[1]
        entry = self._decoders.get(tag) if type(tag) is int else None
        if entry is None:
            raise RemoteProtocolError(f"unknown message tag {tag!r}", code="unknown_message")
        want, name, dec = entry
        if type(version) is not int or version != want:
            raise RemoteProtocolError(f"{name} schema version {version!r} not supported (expected {want})")
        return dec(body)

    def encode_message(self, msg: Message) -> bytes:
        return self._pack(self.to_wire(msg))

    def decode_message(self, data: bytes) -> Message:
        return self.from_wire(self._unpack(data))

    # ---- envelopes

    def encode(self, env: Envelope) -> bytes:
        s, r, body = env.sender, env.receiver, env.body
        enc = self._encoders.get(type(body))  # to_wire, inlined: this runs for every message sent
        wire = enc(body) if enc is not None else self.to_wire(body)
        try:  # _pack, inlined (a try costs nothing until something raises)
            return self._packer_pack([env.msg_id, env.request_id, s.node, s.name, r.node, r.name, env.sent_at, wire])
        except (TypeError, ValueError, OverflowError) as exc:
            raise self._pack_failed(exc) from exc

    def decode(self, data: bytes) -> Envelope:
        try:  # _unpack, inlined: this runs for every message received
            a = _unpackb(data)
        except Exception:
            a = self._unpack(data)  # raises the RemoteProtocolError
        if type(a) is not list or len(a) != 8:
            raise _bad("envelope", "array of 8", a)
        msg_id, request_id, sn, sa, rn, ra, sent_at, body = a
        if type(msg_id) is not int:
            raise _bad("envelope.msg_id", "int", msg_id)
        if request_id is not None and type(request_id) is not int:
            raise _bad("envelope.request_id", "int or nil", request_id)
        if type(sn) is not str or type(sa) is not str or type(rn) is not str or type(ra) is not str:
            for where, v in (("sender.node", sn), ("sender.name", sa), ("receiver.node", rn), ("receiver.name", ra)):
                if type(v) is not str:
                    raise _bad("envelope." + where, "str", v)
        if type(sent_at) is not float:
            if type(sent_at) is not int:
                raise _bad("envelope.sent_at", "float", sent_at)
            sent_at = float(sent_at)
        addresses = self._addresses  # the cache hit, inlined: this runs for every message received
        sender = addresses.get((sn, sa)) or self._address(sn, sa)
        receiver = addresses.get((rn, ra)) or self._address(rn, ra)
        # from_wire's happy path, inlined; anything unusual goes through it for the precise error.
        entry = self._decoders.get(body[0]) if type(body) is list and len(body) >= 2 and type(body[0]) is int else None
        if entry is not None and type(body[1]) is int and body[1] == entry[0]:
            msg = entry[2](body)
        else:
            msg = self.from_wire(body)
        return new_envelope(msg_id, request_id, sender, receiver, sent_at, msg)

    def _address(self, node: str, name: str) -> Address:
        # A cluster has few (node, actor) pairs; reusing their Address objects saves two
        # allocations per decode. The cache is bounded so a hostile peer cannot grow it.
        key = (node, name)
        addr = self._addresses.get(key)
        if addr is None:
            if len(self._addresses) >= 4096:
                self._addresses.clear()
            addr = self._addresses[key] = Address(node, name)
        return addr

    # ---- msgpack

    def _pack(self, obj: Any) -> bytes:
        try:
            return self._packer_pack(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            raise self._pack_failed(exc) from exc

    def _pack_failed(self, exc: Exception) -> LocalProtocolError:
        self._packer.reset()  # drop the half-packed object
        return LocalProtocolError(f"cannot encode: {exc}")

    @staticmethod
    def _unpack(data: bytes) -> Any:
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
        except Exception as exc:  # msgpack raises many types (ExtraData, FormatError, ValueError, ...)
            raise RemoteProtocolError(f"not valid msgpack: {type(exc).__name__}: {exc}") from None


DEFAULT_CODEC = Codec()
