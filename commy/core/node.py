"""A node: hosts actors, routes envelopes by address, runs timers, counts dead letters.

The node is still sans-IO. A runtime gives it a `Host` -- a clock, one-shot callbacks and a way to
transmit an envelope to another node -- and feeds it envelopes that arrive from other nodes
(`deliver`) and link events (`publish`). Envelopes for actors on this node go through a FIFO
mailbox that is drained after each input, so an actor's send never re-enters another actor's
handler: the order of delivery depends only on the order of inputs, which keeps the simulator
deterministic.

A handler that raises `RemoteProtocolError` (the sender broke the protocol) gets a typed `Error`
sent back to the sender and the node carries on. Any other exception is our own bug: in `strict`
mode (tests, simulator) it propagates; otherwise it is logged and counted and the node keeps serving.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from commy.core.actor import Actor, Context, TimerId
from commy.errors import LocalProtocolError, RemoteProtocolError
from commy.messages import Address, Envelope, Error, Message, new_envelope

LogSink = Callable[[str, str, str, str, dict[str, object]], None]
"""(node, actor, level, event, fields) -> None"""

Observer = Callable[[str, Envelope, bool], None]
"""(actor name, envelope, handled) -> None; called after each local delivery."""


class Host(Protocol):
    """What a runtime provides to a node."""

    def now(self) -> float: ...
    def call_later(self, delay: float, fn: Callable[[], None]) -> Any: ...
    def cancel_call(self, handle: Any) -> None: ...
    def transmit(self, env: Envelope) -> None:
        """Carry `env` to node `env.receiver.node` (best effort; links report failures as events)."""
        ...


def _null_sink(node: str, actor: str, level: str, event: str, fields: dict[str, object]) -> None:
    return None


class ActorLog:
    """The `Log` an actor sees: tags every record with node and actor, hands it to the sink."""

    __slots__ = ("_actor", "_node", "_sink")

    def __init__(self, node: str, actor: str, sink: LogSink) -> None:
        self._node, self._actor, self._sink = node, actor, sink

    def debug(self, event: str, **fields: object) -> None:
        self._sink(self._node, self._actor, "debug", event, fields)

    def info(self, event: str, **fields: object) -> None:
        self._sink(self._node, self._actor, "info", event, fields)

    def warning(self, event: str, **fields: object) -> None:
        self._sink(self._node, self._actor, "warning", event, fields)

    def error(self, event: str, **fields: object) -> None:
        self._sink(self._node, self._actor, "error", event, fields)


class ActorContext(Context):
    """The node's implementation of `Context` for one actor."""

    def __init__(self, node: Node, name: str, rng: random.Random) -> None:
        self._node = node
        self._address = Address(node.node_id, name)
        self._rng = rng
        self._log = ActorLog(node.node_id, name, node.log_sink)
        # The host's clock itself rather than a method calling it: actors read it on every request.
        self.now = node.host.now  # type: ignore[method-assign]

    @property
    def address(self) -> Address:
        return self._address

    @property
    def rng(self) -> random.Random:
        return self._rng

    @property
    def log(self) -> ActorLog:
        return self._log

    def send(self, to: Address, msg: Message, *, request_id: int | None = None) -> int:
        return self._node.send(self._address, to, msg, request_id)

    def reply(self, request: Envelope, msg: Message) -> int:
        return self._node.send(self._address, request.sender, msg, request.msg_id)

    def publish(self, msg: Message) -> None:
        self._node.publish(msg)

    def set_timer(self, delay: float, msg: Message) -> TimerId:
        return self._node.set_timer(self._address.name, delay, msg)

    def cancel(self, timer: TimerId) -> None:
        self._node.cancel_timer(timer)

    def now(self) -> float:  # replaced per instance by the host's own `now` (see __init__)
        return self._node.host.now()

    def new_id(self) -> str:
        return f"{self._rng.getrandbits(128):032x}"


@dataclass
class NodeStats:
    delivered: int = 0
    dead_letters: int = 0
    handler_errors: int = 0
    protocol_errors: int = 0
    sent_remote: int = 0
    dead_letter_types: dict[str, int] = field(default_factory=dict)


class Node:
    """Hosts actors under names and routes envelopes between them and to other nodes."""

    def __init__(
        self,
        node_id: str,
        host: Host,
        seed: int,
        *,
        log_sink: LogSink = _null_sink,
        observer: Observer | None = None,
        strict: bool = False,
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.rng = random.Random(seed)
        self.log_sink = log_sink
        self.observer = observer
        self.strict = strict
        self.stats = NodeStats()
        self.actors: dict[str, Actor] = {}
        self._log = ActorLog(node_id, "node", log_sink)
        self._mailbox: deque[Envelope] = deque()
        self._draining = False
        self._next_msg_id = 1
        self._next_timer = 1
        self._timers: dict[TimerId, tuple[str, Any, Message]] = {}  # actor, host handle, message
        self.stopped = False

    # ---- actors

    def spawn(self, name: str, factory: Callable[[Context], Actor]) -> Address:
        if name in self.actors:
            raise LocalProtocolError(f"actor {name!r} already exists on node {self.node_id}")
        ctx = ActorContext(self, name, random.Random(self.rng.getrandbits(64)))
        actor = factory(ctx)
        self.actors[name] = actor
        actor.started()
        self._drain()
        return ctx.address

    def stop(self) -> None:
        """Stop every actor and cancel every timer (a clean shutdown, or a crash in the simulator)."""
        for timer in list(self._timers):
            self.cancel_timer(timer)
        for actor in self.actors.values():
            actor.stopped()
        self.actors.clear()
        self._mailbox.clear()
        self.stopped = True

    # ---- sending and delivery

    def send(self, sender: Address, to: Address, msg: Message, request_id: int | None) -> int:
        if self.stopped:
            return 0
        msg_id = self._next_msg_id
        self._next_msg_id += 1
        env = new_envelope(msg_id, request_id, sender, to, self.host.now(), msg)
        if to.node == self.node_id:
            self._mailbox.append(env)
            self._drain()
        else:
            self.stats.sent_remote += 1
            self.host.transmit(env)
        return msg_id

    def deliver(self, env: Envelope) -> None:
        """An envelope from another node (already decoded and checked by the link)."""
        if self.stopped:
            return
        if self._draining or self._mailbox:
            self._mailbox.append(env)
            self._drain()
            return
        # Idle node, empty mailbox (the usual case, once per message received): dispatch at once
        # instead of a round trip through the mailbox; the order is the same either way.
        self._draining = True
        try:
            self._dispatch(env)
            mailbox = self._mailbox
            while mailbox:
                self._dispatch(mailbox.popleft())
        finally:
            self._draining = False

    def publish(self, msg: Message) -> None:
        """A local event for every actor that handles its type (link events, peer state changes)."""
        if self.stopped:
            return
        # An event nobody subscribes to is not a dead letter: publishing is a broadcast.
        for name in [name for name, a in self.actors.items() if type(msg) in a.HANDLERS]:
            addr = Address(self.node_id, name)
            self._mailbox.append(Envelope(0, None, addr, addr, self.host.now(), msg))
        self._drain()

    def _drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            while self._mailbox:
                self._dispatch(self._mailbox.popleft())
        finally:
            self._draining = False

    def _dispatch(self, env: Envelope) -> None:
        actor = self.actors.get(env.receiver.name)
        handled = False
        if actor is not None:
            try:
                handled = actor.receive(env)
            except RemoteProtocolError as exc:
                handled = True
                self.stats.protocol_errors += 1
                self._log.warning("protocol_error", sender=str(env.sender), code=exc.code, detail=exc.detail)
                if env.sender.node != self.node_id:
                    self.send(env.receiver, env.sender, Error(exc.code, exc.detail), env.msg_id)
            except Exception as exc:
                handled = True  # it had a handler: a handler error, not a dead letter
                self.stats.handler_errors += 1
                self._log.error("handler_error", actor=env.receiver.name, message=type(env.body).__name__,
                                error=repr(exc))
                if self.strict:
                    raise
        if handled:
            self.stats.delivered += 1
        else:
            self._dead_letter(env.receiver.name, env.body)
        if self.observer is not None:
            self.observer(env.receiver.name, env, handled)

    def _dead_letter(self, actor: str, msg: Message) -> None:
        self.stats.dead_letters += 1
        name = type(msg).__name__
        self.stats.dead_letter_types[name] = self.stats.dead_letter_types.get(name, 0) + 1
        self._log.warning("dead_letter", actor=actor, message=name)

    # ---- timers

    def set_timer(self, actor: str, delay: float, msg: Message) -> TimerId:
        if delay < 0:
            raise LocalProtocolError(f"timer delay must be >= 0, got {delay}")
        timer = TimerId(self._next_timer)
        self._next_timer += 1
        if self.stopped:
            return timer  # a stopped node schedules nothing (e.g. a timer set from `stopped()`)
        handle = self.host.call_later(delay, lambda: self._fire(timer))
        self._timers[timer] = (actor, handle, msg)
        return timer

    def cancel_timer(self, timer: TimerId) -> None:
        entry = self._timers.pop(timer, None)
        if entry is not None:
            self.host.cancel_call(entry[1])

    def _fire(self, timer: TimerId) -> None:
        entry = self._timers.pop(timer, None)
        if entry is None or self.stopped:
            return
        actor, _, msg = entry
        addr = Address(self.node_id, actor)
        self._mailbox.append(Envelope(0, None, addr, addr, self.host.now(), msg))
        self._drain()
