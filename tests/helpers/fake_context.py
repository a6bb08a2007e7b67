"""A `Context` for unit-testing ONE actor, with no node, no host and no real time.

It records what the actor does (`sent`, `published`, `log.records`), keeps timers in a list that
`fire_next()` / `advance(dt)` deliver to the bound actor in due order, and has a settable `now`,
a seeded rng and deterministic ids. `deliver(actor, msg, sender=...)` hands the actor one message.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from commy.core.actor import Actor, Context, TimerId
from commy.messages import Address, Envelope, Message


@dataclass(frozen=True)
class Sent:
    to: Address
    msg: Message
    request_id: int | None
    msg_id: int


@dataclass
class Timer:
    id: TimerId
    due: float
    msg: Message


class FakeLog:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, object]]] = []

    def debug(self, event: str, **fields: object) -> None:
        self.records.append(("debug", event, fields))

    def info(self, event: str, **fields: object) -> None:
        self.records.append(("info", event, fields))

    def warning(self, event: str, **fields: object) -> None:
        self.records.append(("warning", event, fields))

    def error(self, event: str, **fields: object) -> None:
        self.records.append(("error", event, fields))

    def events(self, level: str | None = None) -> list[str]:
        return [e for lv, e, _ in self.records if level is None or lv == level]


class FakeContext(Context):
    def __init__(self, address: Address = Address("n1", "actor"), *, now: float = 0.0, seed: int = 0) -> None:
        self._address = address
        self._rng = random.Random(seed)
        self._log = FakeLog()
        self.current = now
        self.actor: Actor | None = None
        self.sent: list[Sent] = []
        self.published: list[Message] = []
        self.timers: list[Timer] = []  # pending, in the order they were set
        self._next_msg_id = 1
        self._next_timer = 1
        self._next_uid = 1

    def bind(self, actor: Actor) -> Actor:
        """The actor that timers are delivered to (usually the one built with this context)."""
        self.actor = actor
        return actor

    # ---- Context

    @property
    def address(self) -> Address:
        return self._address

    @property
    def rng(self) -> random.Random:
        return self._rng

    @property
    def log(self) -> FakeLog:
        return self._log

    def send(self, to: Address, msg: Message, *, request_id: int | None = None) -> int:
        msg_id = self._next_msg_id
        self._next_msg_id += 1
        self.sent.append(Sent(to, msg, request_id, msg_id))
        return msg_id

    def reply(self, request: Envelope, msg: Message) -> int:
        return self.send(request.sender, msg, request_id=request.msg_id)

    def publish(self, msg: Message) -> None:
        self.published.append(msg)

    def set_timer(self, delay: float, msg: Message) -> TimerId:
        if not delay >= 0:
            raise ValueError(f"bad timer delay {delay}")
        timer = TimerId(self._next_timer)
        self._next_timer += 1
        self.timers.append(Timer(timer, self.current + delay, msg))
        return timer

    def cancel(self, timer: TimerId) -> None:
        self.timers = [t for t in self.timers if t.id != timer]

    def now(self) -> float:
        return self.current

    def new_id(self) -> str:
        uid = self._next_uid
        self._next_uid += 1
        return f"{uid:032x}"

    # ---- driving time

    def take_sent(self) -> list[Sent]:
        out, self.sent = self.sent, []
        return out

    def fire_next(self) -> Message:
        """Deliver the earliest pending timer (ties: the one set first); time moves to its due time."""
        if not self.timers:
            raise AssertionError("no pending timer")
        timer = min(self.timers, key=lambda t: (t.due, t.id))
        self.timers.remove(timer)
        self.current = max(self.current, timer.due)
        self._deliver_timer(timer.msg)
        return timer.msg

    def advance(self, dt: float) -> list[Message]:
        """Move time forward by `dt`, delivering every timer that falls due, in order."""
        end = self.current + dt
        fired: list[Message] = []
        while self.timers and min(t.due for t in self.timers) <= end:
            fired.append(self.fire_next())
        self.current = end
        return fired

    def _deliver_timer(self, msg: Message) -> None:
        if self.actor is None:
            raise AssertionError("bind(actor) before firing timers")
        self.actor.receive(Envelope(0, None, self._address, self._address, self.current, msg))


def deliver(actor: Actor, msg: Message, sender: Address = Address("n2", "peer"), *,
            msg_id: int = 1, request_id: int | None = None) -> bool:
    """Hand `msg` to `actor` as if `sender` sent it; returns whether a handler took it."""
    ctx = actor.ctx
    env = Envelope(msg_id, request_id, sender, ctx.address, ctx.now(), msg)
    return actor.receive(env)
