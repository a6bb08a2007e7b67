"""The message machinery: the registry, `@message`, the shared records and the envelope.

A message is a frozen, slotted dataclass registered with `@message(tag)` under a stable numeric tag
and a schema version; the codec (`commy.codec`) generates one encoder and one strict decoder per
class from the field annotations. Nested records that are not messages themselves (`Address`,
`MemberInfo`, ...) are plain frozen dataclasses and travel as arrays inside their parent.

Tags are grouped by protocol, one module each: 1-9 link and 10-49 peer (`peer.py` and `cluster.py`,
server <-> server), 100-199 client (`client.py`, client <-> server over WebSocket), 1000+ local only
(`local.py`). `commy.messages` re-exports them all.

An `Envelope` wraps every message in flight: message id, the id of the request it answers (if any),
sender and receiver addresses, and the sender's timestamp.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

REGISTRY: dict[int, type[Message]] = {}
"""tag -> message class; filled once at import by `@message`."""

WIRE = "wire"
LOCAL = "local"


class Message:
    """Marker base of all registered messages."""

    __slots__ = ()
    TAG: ClassVar[int]
    VERSION: ClassVar[int]
    SCOPE: ClassVar[str]


M = TypeVar("M", bound=type[Message])
T = TypeVar("T")


def message(tag: int, version: int = 1, scope: str = WIRE) -> Callable[[M], M]:
    """Register a message class under `tag` (unique, stable forever) and a schema `version`."""

    def register(cls: M) -> M:
        if tag in REGISTRY:
            raise ValueError(f"tag {tag} used by both {REGISTRY[tag].__name__} and {cls.__name__}")
        cls.TAG = tag
        cls.VERSION = version
        cls.SCOPE = scope
        REGISTRY[tag] = cls
        return cls

    return register


# --------------------------------------------------------------------------- shared records


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """Where an actor lives: the node id and the actor's name on that node."""

    node: str
    name: str

    def __str__(self) -> str:
        return f"{self.node}/{self.name}"


CLIENT_NODE_PREFIX = "client:"
"""A WebSocket client's connection appears to a node as the actor `client` on the pseudo-node
`client:<connection id>`: replies to it leave through the host like a remote send, and the
gateway (or the simulator) carries them to the connection."""


def client_address(conn_id: str) -> Address:
    return Address(CLIENT_NODE_PREFIX + conn_id, "client")


def is_client(addr: Address) -> bool:
    return addr.node.startswith(CLIENT_NODE_PREFIX)


class ServerStatus(enum.Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    SHUTTING_DOWN = "shutting_down"


class MigrationReason(enum.Enum):
    NODE_FAILURE = "node_failure"
    DRAINING = "draining"
    LOAD_BALANCING = "load_balancing"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message in flight. `request_id` is the `msg_id` of the request this answers, or None."""

    msg_id: int
    request_id: int | None
    sender: Address
    receiver: Address
    sent_at: float
    body: Message


def fast_constructor(cls: type[T]) -> Callable[..., T]:
    """A callable building `cls` from all its fields, positionally, for hot paths; no validation.

    A frozen dataclass's `__init__` sets each field through `object.__setattr__` looked up by
    name. The callable returned is a plain slotted "twin" class with the same bases and slots,
    whose `__init__` stores into the slots directly and then sets `self.__class__ = cls`: calling
    it yields a real, still frozen `cls` instance equal to `cls(...)`, about twice as fast (one
    frame, no per-field calls). `__class__` may change because the two layouts are identical;
    that is checked here, once. Classes with `__post_init__` keep their constructor (it validates).
    """
    if hasattr(cls, "__post_init__"):
        return cls
    if not (dataclasses.is_dataclass(cls) and "__slots__" in cls.__dict__):
        raise TypeError(f"{cls.__name__}: only slotted dataclasses have a fast constructor")
    names = [f.name for f in dataclasses.fields(cls)]
    args = "".join(", " + n for n in names)
    sets = "".join(f"        self.{n} = {n}\n" for n in names)
    ns: dict[str, Any] = {"cls": cls, "bases": cls.__bases__}
    exec(f"class Twin(*bases):\n    __slots__ = cls.__slots__\n    def __init__(self{args}):\n{sets}"
         "        self.__class__ = cls\n", ns)
    twin = ns["Twin"]
    twin.__name__ = twin.__qualname__ = f"_{cls.__name__}Twin"
    try:  # a layout mismatch fails here, at import, rather than on the first message
        object.__new__(twin).__class__ = cls
    except TypeError as exc:
        raise TypeError(f"{cls.__name__}: no fast constructor ({exc})") from None
    return twin


if TYPE_CHECKING:
    def new_envelope(msg_id: int, request_id: int | None, sender: Address, receiver: Address, sent_at: float,
                     body: Message) -> Envelope:
        """`Envelope(...)`, faster: the one fast envelope constructor (node `send`, codec `decode`)."""
else:
    new_envelope = fast_constructor(Envelope)
