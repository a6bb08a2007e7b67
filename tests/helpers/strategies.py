"""Hypothesis strategies derived from field annotations, so new messages are covered for free.

`for_type(tp)` understands everything the codec does: int (int64), finite float, str, bytes, bool,
enums, nested dataclass records, `tuple[X, ...]`, `X | None` and `dict[K, V]`. `messages()` draws
any registered message, `envelopes()` an envelope around one.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from functools import cache
from typing import Any

from hypothesis import strategies as st

from commy.messages import REGISTRY, WIRE, Address, Envelope, Message

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
SMALL = 4  # collection sizes: enough to exercise nesting, small enough to stay fast

_PRIMITIVES: dict[Any, st.SearchStrategy[Any]] = {
    int: INT64,
    float: FLOATS,
    str: st.text(max_size=20),
    bytes: st.binary(max_size=32),
    bool: st.booleans(),
}


def fields_of(cls: type) -> list[tuple[str, Any]]:
    """(name, resolved annotation) of each dataclass field, in wire order."""
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]


@cache
def for_type(tp: Any) -> st.SearchStrategy[Any]:
    if tp in _PRIMITIVES:
        return _PRIMITIVES[tp]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return records(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        assert len(inner) == 1 and len(args) == 2, f"only X | None is supported, got {tp!r}"
        return st.none() | for_type(inner[0])
    if origin is tuple:
        assert len(args) == 2 and args[1] is Ellipsis, f"only tuple[X, ...] is supported, got {tp!r}"
        return st.lists(for_type(args[0]), max_size=SMALL).map(tuple)
    if origin is dict:
        return st.dictionaries(for_type(args[0]), for_type(args[1]), max_size=SMALL)
    raise TypeError(f"no strategy for {tp!r}")


def records(cls: type) -> st.SearchStrategy[Any]:
    """Instances of a dataclass (message or nested record), every field drawn from its type."""
    return st.builds(cls, **{name: for_type(tp) for name, tp in fields_of(cls)})


def messages(classes: list[type[Message]] | None = None) -> st.SearchStrategy[Message]:
    """Wire messages by default: local-only ones are refused by the default codec on purpose."""
    chosen = sorted((c for c in REGISTRY.values() if c.SCOPE == WIRE), key=lambda c: c.TAG) \
        if classes is None else classes
    return st.one_of([records(cls) for cls in chosen])


def addresses() -> st.SearchStrategy[Address]:
    return st.builds(Address, st.text(max_size=12), st.text(max_size=12))


def envelopes(bodies: st.SearchStrategy[Message] | None = None) -> st.SearchStrategy[Envelope]:
    return st.builds(Envelope, INT64, st.none() | INT64, addresses(), addresses(), FLOATS,
                     messages() if bodies is None else bodies)


def msgpack_values() -> st.SearchStrategy[Any]:
    """Arbitrary msgpack-able objects (structured, usually wrong for our schema)."""
    leaves = (st.none() | st.booleans() | INT64 | st.floats() | st.text(max_size=10) | st.binary(max_size=10)
              | st.sampled_from([10, 1, 20, 1000, "healthy", "down", -1, 2**64 - 1]))
    return st.recursive(
        leaves,
        lambda kids: st.lists(kids, max_size=9) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
        max_leaves=12,
    )
