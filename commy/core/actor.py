"""Actors, their explicit type dispatch, and the Context seam they act through.

An actor subclasses `Actor` and marks handler methods with `@handles(SomeMessage, ...)`; when the
class is created, `__init_subclass__` folds those marks (and the base classes' tables) into one
`{message type: method}` table. Dispatch is a single dict lookup on `type(body)` -- never a lookup
by name -- and a message with no entry is a dead letter for the node to count and log.

Actors never import the world. Every effect goes through `self.ctx`: send and reply, timers (which
come back as ordinary messages), the clock, a seeded `random.Random`, fresh ids, a structured log,
and `publish` for local events to every actor on the node that handles their type. The asyncio
runtime, the simulator and the unit-test fake all implement the same `Context` protocol.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, ClassVar, NewType, Protocol, TypeVar

from commy.messages import Address, Envelope, Message

TimerId = NewType("TimerId", int)
Handler = Callable[[Any, Any, Envelope], None]
F = TypeVar("F", bound=Callable[..., None])


class Log(Protocol):
    """Structured log: an event name plus fields; the runtime decides where it goes."""

    def debug(self, event: str, **fields: object) -> None: ...
    def info(self, event: str, **fields: object) -> None: ...
    def warning(self, event: str, **fields: object) -> None: ...
    def error(self, event: str, **fields: object) -> None: ...


class Context(Protocol):
    """Everything an actor may do to the world."""

    @property
    def address(self) -> Address: ...

    @property
    def rng(self) -> random.Random: ...

    @property
    def log(self) -> Log: ...

    def send(self, to: Address, msg: Message, *, request_id: int | None = None) -> int:
        """Send `msg` to `to` (local or remote); returns the new envelope's msg_id."""
        ...

    def reply(self, request: Envelope, msg: Message) -> int:
        """Send `msg` to the sender of `request`, carrying its msg_id as request_id."""
        ...

    def publish(self, msg: Message) -> None:
        """Deliver a local event to every actor on this node that handles its type."""
        ...

    def set_timer(self, delay: float, msg: Message) -> TimerId:
        """After `delay` seconds, `msg` arrives at this actor (from itself)."""
        ...

    def cancel(self, timer: TimerId) -> None: ...

    def now(self) -> float:
        """Seconds on this node's clock (virtual in the simulator, skewable)."""
        ...

    def new_id(self) -> str:
        """A fresh 128-bit hex id drawn from the node's seeded random stream."""
        ...


def handles(*types: type[Message]) -> Callable[[F], F]:
    """Mark a method as the handler of the given message types."""
    if not types:
        raise TypeError("@handles needs at least one message type")

    def mark(fn: F) -> F:
        fn._commy_handles = types  # type: ignore[attr-defined]
        return fn

    return mark


class Actor:
    """Base class: subclasses declare handlers with `@handles` and act through `self.ctx`."""

    HANDLERS: ClassVar[dict[type[Message], Handler]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own: dict[type[Message], Handler] = {}
        for attr in cls.__dict__.values():
            for tp in getattr(attr, "_commy_handles", ()):
                if tp in own:
                    raise TypeError(f"{cls.__name__} handles {tp.__name__} twice")
                own[tp] = attr
        table: dict[type[Message], Handler] = {}
        for base in reversed(cls.__mro__[1:]):
            table.update(getattr(base, "HANDLERS", {}))
        table.update(own)  # a subclass may override a base handler
        cls.HANDLERS = table

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def started(self) -> None:
        """Called once the actor is registered on its node (timers may be set here)."""

    def stopped(self) -> None:
        """Called when the actor or its node stops; its timers are already cancelled."""

    def receive(self, env: Envelope) -> bool:
        """Dispatch by the body's exact type; False means nobody here handles it (dead letter)."""
        handler = self.HANDLERS.get(type(env.body))
        if handler is None:
            return False
        handler(self, env.body, env)
        return True
