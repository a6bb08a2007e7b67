"""Codec: every registered message round-trips; anything malformed raises RemoteProtocolError only."""

from __future__ import annotations

import dataclasses
import enum
import random
import re
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commy.codec import DEFAULT_CODEC, Codec
from commy.errors import LocalProtocolError, RemoteProtocolError
from commy.messages import (
    REGISTRY,
    WIRE,
    Address,
    Envelope,
    Error,
    HeartbeatPing,
    MemberInfo,
    MemberList,
    Message,
    ServerStatus,
    message,
)
from tests.helpers import sweep_size
from tests.helpers.strategies import envelopes, fields_of, messages, msgpack_values, records

CODEC = DEFAULT_CODEC
LOCAL_TOO = Codec(decode_local=True)  # local messages decode only where we ask for it
ALL = sorted(REGISTRY.values(), key=lambda c: c.TAG)
PING = HeartbeatPing(7, 1.5, ServerStatus.HEALTHY)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def rejects(data: bytes, *, envelope: bool = False) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        (CODEC.decode if envelope else CODEC.decode_message)(data)
    text = str(info.value)
    assert text and len(text) < 400 and "\n" not in text, text  # one readable line
    return info.value


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@given(data=st.data())
def test_every_message_round_trips(cls: type[Message], data: st.DataObject) -> None:
    msg = data.draw(records(cls))
    wire = CODEC.to_wire(msg)
    assert wire[:2] == [cls.TAG, cls.VERSION] and len(wire) == len(fields_of(cls)) + 2
    back = LOCAL_TOO.decode_message(CODEC.encode_message(msg))
    assert type(back) is cls and back == msg
    if cls.SCOPE == WIRE:
        assert CODEC.decode_message(CODEC.encode_message(msg)) == msg


@pytest.mark.parametrize("cls", [c for c in ALL if c.SCOPE != WIRE], ids=lambda c: c.__name__)
@given(data=st.data())
def test_a_peer_cannot_send_a_local_only_message(cls: type[Message], data: st.DataObject) -> None:
    msg = data.draw(records(cls))
    env = Envelope(1, None, Address("n2", "x"), Address("n1", "heartbeat"), 0.0, msg)
    assert rejects(CODEC.encode(env), envelope=True).code == "unknown_message"


@given(envelopes())
def test_envelopes_round_trip(env: Envelope) -> None:
    assert CODEC.decode(CODEC.encode(env)) == env


def test_int_fields_take_int_and_float_fields_take_int() -> None:
    wire = pack([10, 1, 2**64 - 1, 3, "degraded"])
    assert CODEC.decode_message(wire) == HeartbeatPing(2**64 - 1, 3.0, ServerStatus.DEGRADED)


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Inner:
    a: int
    b: tuple[float, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Kitchen(Message):
    """Every shape the codec supports, in one unregistered message."""

    TAG = 9001
    VERSION = 3
    color: Color
    maybe: int | None
    inner: Inner
    inners: tuple[Inner, ...]
    nested: tuple[tuple[Color, ...], ...]
    table: dict[str, Inner | None]
    raw: dict[bytes, bytes]
    blob: bytes | None
    flag: bool


KITCHEN = Codec([Kitchen])


@given(records(Kitchen))
def test_every_supported_shape_round_trips(msg: Kitchen) -> None:
    assert KITCHEN.decode_message(KITCHEN.encode_message(msg)) == msg


def test_int_enum_refuses_bool_and_float() -> None:
    ok = KITCHEN.to_wire(Kitchen(Color.RED, None, Inner(1, ()), (), (), {}, {}, None, True))
    for bad in (True, 1.0, 3, "RED"):
        with pytest.raises(RemoteProtocolError, match=r"Kitchen\.color: expected one of 1, 2"):
            KITCHEN.decode_message(pack([*ok[:2], bad, *ok[3:]]))
    cases: list[tuple[str, int, Any]] = [("Kitchen.table key", 7, {b"k": None}), ("Kitchen.raw key", 8, {"k": b""}),
                                         ("Inner.a", 7, {"k": ["x", []]}), ("Kitchen.nested[]", 6, [[1], "x"])]
    for where, index, bad in cases:
        with pytest.raises(RemoteProtocolError, match="^" + re.escape(where)):
            KITCHEN.decode_message(pack([*ok[:index], bad, *ok[index + 1:]]))


@pytest.mark.parametrize("tp", [dict[int, str], int | str, tuple[int, str], list[int], object])
def test_unsupported_annotations_refused_when_the_codec_is_built(tp: Any) -> None:
    cls: Any = dataclasses.make_dataclass("Odd", [("f", tp)], bases=(Message,), frozen=True, slots=True)
    cls.TAG, cls.VERSION = 9002, 1
    with pytest.raises(LocalProtocolError):
        Codec([cls])


# --------------------------------------------------------------------------- strictness


def example(tp: Any) -> Any:
    """A valid value of any supported annotation."""
    simple = {int: 1, float: 1.5, str: "s", bytes: b"b", bool: True}
    if tp in simple:
        return simple[tp]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return next(iter(tp))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp(*(example(t) for _, t in fields_of(tp)))
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        return (example(args[0]),)
    if typing.get_origin(tp) is dict:
        return {example(args[0]): example(args[1])}
    return example(next(a for a in args if a is not type(None)))  # X | None


def wrong(tp: Any) -> list[Any]:
    """Wire values that must be refused for a field of type `tp`."""
    table: dict[Any, list[Any]] = {
        int: [True, 1.5, "1", None, b"1"], float: ["1.0", False, None, b""], str: [b"s", 1, None, ["s"]],
        bytes: ["s", 1, None, [1]], bool: [1, 0, "true", None],
    }
    if tp in table:
        return table[tp]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return ["no-such-value", 1, True, None, [next(iter(tp)).value]]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return ["x", None, [None] * (len(fields_of(tp)) + 1), {}]
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        return ["x", None, {}, [wrong(args[0])[0]]]
    if typing.get_origin(tp) is dict:
        return [[], None, {"k": wrong(args[1])[0]}]
    return [w for w in wrong(next(a for a in args if a is not type(None))) if w is not None]  # X | None


@pytest.mark.parametrize("cls", [c for c in ALL if fields_of(c) and c.SCOPE == WIRE], ids=lambda c: c.__name__)
def test_each_wrong_field_type_is_refused_and_named(cls: type[Message]) -> None:
    fields = fields_of(cls)
    wire = CODEC.to_wire(cls(*(example(t) for _, t in fields)))
    assert CODEC.decode_message(pack(wire)) == cls(*(example(t) for _, t in fields))
    for i, (name, tp) in enumerate(fields):
        for bad in wrong(tp):
            mutated = list(wire)
            mutated[2 + i] = bad
            exc = rejects(pack(mutated))
            nested = isinstance(tp, type) and dataclasses.is_dataclass(tp)
            assert f"{cls.__name__}.{name}" in str(exc) or nested, str(exc)


def test_nested_record_errors_name_the_record() -> None:
    good = ["n1", 1, "h", 7001, "ws://h", 0]
    for record, text in (([*good[:5], "0"], r"MemberInfo\.incarnation: expected int"),
                         (good[:5], "MemberInfo has 6 fields, got 5"),
                         ([good, "x"], r"MemberList\.members\[\]: expected array")):
        members = record if isinstance(record[0], list) else [record]
        with pytest.raises(RemoteProtocolError, match=text):
            CODEC.decode_message(pack([19, 1, members, []]))
    assert CODEC.decode_message(pack([19, 1, [good], ["n9"]])) == MemberList(
        (MemberInfo("n1", 1, "h", 7001, "ws://h", 0),), ("n9",))


@pytest.mark.parametrize("tag", [999_999, -1, "10", True, None, 1.0, [10]])
def test_unknown_tag(tag: Any) -> None:
    exc = rejects(pack([tag, 1, 1, 1.0, "healthy"]))
    assert exc.code == "unknown_message" and "unknown message tag" in str(exc)


@pytest.mark.parametrize("version", [0, 2, True, 1.0, "1", None])
def test_wrong_version(version: Any) -> None:
    assert "HeartbeatPing schema version" in str(rejects(pack([10, version, 1, 1.0, "healthy"])))


@pytest.mark.parametrize("wire", [[10, 1, 1, 1.0], [10, 1, 1, 1.0, "healthy", None], [10, 1], [1, 1, "n1", 1, None]])
def test_wrong_field_count(wire: list[Any]) -> None:
    assert "fields, got" in str(rejects(pack(wire)))


@pytest.mark.parametrize("body", ["x", [], [10], {"tag": 10}, None, 10, b"\x0a"])
def test_body_not_a_message_array(body: Any) -> None:
    rejects(pack(body))
    rejects(pack([1, None, "a", "b", "c", "d", 0.0, body]), envelope=True)


ENV_OK = [1, None, "a", "x", "b", "y", 0.5, CODEC.to_wire(PING)]


@pytest.mark.parametrize(("index", "bad"), [(0, "1"), (0, True), (0, None), (1, "2"), (1, False), (2, 1),
                                            (3, b"x"), (4, None), (5, ["y"]), (6, "now"), (6, None), (6, True)])
def test_envelope_fields_checked(index: int, bad: Any) -> None:
    env = list(ENV_OK)
    env[index] = bad
    assert str(rejects(pack(env), envelope=True)).startswith("envelope.")


@pytest.mark.parametrize("shape", [ENV_OK[:7], [*ENV_OK, None], {"msg_id": 1}, "env"])
def test_envelope_shape_checked(shape: Any) -> None:
    assert "envelope: expected array of 8" in str(rejects(pack(shape), envelope=True))


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x95\x0a\x01", b"\xda\x00\x05ab", b"\xdd\xff\xff\xff\xff"])
def test_not_msgpack(data: bytes) -> None:
    assert "not valid msgpack" in str(rejects(data))
    rejects(data, envelope=True)


def test_trailing_bytes() -> None:
    rejects(CODEC.encode_message(PING) + b"\xc0")
    rejects(CODEC.encode(Envelope(1, None, Address("a", "x"), Address("b", "y"), 0.0, PING)) + b"\x00", envelope=True)


@pytest.mark.parametrize("ext", [msgpack.ExtType(5, b"x"), msgpack.Timestamp(1, 0)])
def test_ext_types(ext: Any) -> None:
    rejects(pack([20, 1, ext, "d"]))
    rejects(pack(ext))
    rejects(pack([ext, None, "a", "x", "b", "y", 0.5, CODEC.to_wire(PING)]), envelope=True)


def test_bad_timestamp_ext() -> None:
    rejects(b"\xc7\x03\xff\x00\x00\x00")  # ext 8, type -1 (timestamp), 3 bytes: no such timestamp


def test_non_str_map_keys() -> None:
    rejects(pack({1: 2}))
    rejects(pack([20, 1, {1: "c"}, "d"]))
    rejects(pack({None: 1}), envelope=True)


def test_invalid_utf8() -> None:
    rejects(b"\x94\x14\x01\xa2\xff\xfe\xa1d")  # [20, 1, <invalid str>, "d"]
    assert CODEC.decode_message(b"\x94\x14\x01\xa2ok\xa1d") == Error("ok", "d")


def test_deeply_nested_values() -> None:
    for depth in (900, 1000, 1023, 5000):  # deep enough to break a plain repr() in the error message
        rejects(b"\x91" * depth + b"\xc0")
        rejects(b"\x91" * depth + b"\xc0", envelope=True)
        rejects(pack([20, 1, "c", None]).replace(b"\xc0", b"\x91" * depth + b"\xc0"))


def decode_only_rpe(data: bytes) -> None:
    """Feed `data` to both decoders: either it decodes (and then round-trips) or raises RemoteProtocolError."""
    pairs: list[tuple[Any, Any]] = [(CODEC.decode, CODEC.encode), (CODEC.decode_message, CODEC.encode_message)]
    for decode, encode in pairs:
        try:
            value = decode(data)
        except RemoteProtocolError as exc:
            assert str(exc)
        else:
            again = encode(value)
            assert encode(decode(again)) == again  # bytes, not ==: a decoded NaN is not equal to itself


@pytest.mark.slow
@settings(max_examples=sweep_size(1000, 20_000))
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_remote_protocol_error(data: bytes) -> None:
    decode_only_rpe(data)


@pytest.mark.slow
@settings(max_examples=sweep_size(300, 10_000))
@given(msgpack_values())
def test_structured_garbage_raises_only_remote_protocol_error(value: Any) -> None:
    decode_only_rpe(pack(value))
    decode_only_rpe(pack([10, 1, value, 1.0, "healthy"]))
    decode_only_rpe(pack([1, None, "a", "x", "b", "y", 0.5, value]))


@pytest.mark.slow
@settings(max_examples=sweep_size(200, 5_000))
@given(messages(), st.data())
def test_one_wrong_element_in_a_real_message(msg: Message, data: st.DataObject) -> None:
    wire = CODEC.to_wire(msg)
    index = data.draw(st.integers(0, len(wire) - 1))
    wire[index] = data.draw(msgpack_values())
    decode_only_rpe(pack(wire))
    decode_only_rpe(pack([1, None, "a", "x", "b", "y", 0.5, wire]))


@pytest.mark.slow
def test_mutated_encodings_sweep() -> None:
    """Seeded sweep: bit flips, truncations and insertions in real encodings."""
    rng = random.Random(20240501)
    seeds = [CODEC.encode(Envelope(i, i or None, Address("a", "x"), Address("b", "y"), 0.5, body)) for i, body in
             enumerate([PING, Error("c", "d"), MemberList((MemberInfo("n", 3, "h", 1, "ws://h", 2),), ("s", "v"))])]
    for _ in range(sweep_size(3000, 100_000)):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            op, pos = rng.randrange(3), rng.randrange(len(data))
            if op == 0:
                data[pos] ^= 1 << rng.randrange(8)
            elif op == 1:
                del data[pos:]
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 4))
            if not data:
                break
        decode_only_rpe(bytes(data))


# --------------------------------------------------------------------------- our own misuse


@dataclasses.dataclass(frozen=True, slots=True)
class NotRegistered(Message):
    x: int


@pytest.mark.parametrize("obj", [NotRegistered(1), Address("a", "b"), object(), "text", None])
def test_encoding_an_unregistered_object_is_our_bug(obj: Any) -> None:
    with pytest.raises(LocalProtocolError, match="not a registered message"):
        CODEC.encode_message(obj)
    with pytest.raises(LocalProtocolError):
        CODEC.encode(Envelope(1, None, Address("a", "x"), Address("b", "y"), 0.0, obj))


def test_unencodable_values_raise_local_error_and_the_codec_recovers() -> None:
    for bad in (HeartbeatPing(2**64, 1.0, ServerStatus.HEALTHY), Error("\ud800", "surrogate")):
        with pytest.raises(LocalProtocolError, match="cannot encode"):
            CODEC.encode_message(bad)
    assert CODEC.decode_message(CODEC.encode_message(PING)) == PING


def test_tags_unique_and_stable() -> None:
    assert len({cls.TAG for cls in ALL}) == len(ALL) == len(set(ALL))
    assert all(tag == cls.TAG for tag, cls in REGISTRY.items())
    before = dict(REGISTRY)
    with pytest.raises(ValueError, match="tag 10 used by both HeartbeatPing and Dup"):
        message(10)(type("Dup", (Message,), {}))
    assert before == REGISTRY


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_message_frozen_and_slotted(cls: type[Message]) -> None:
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen and "__slots__" in cls.__dict__
    inst = cls(*(example(t) for _, t in fields_of(cls)))
    assert not hasattr(inst, "__dict__")
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
        inst.extra = 1  # type: ignore[attr-defined]
