"""Actor dispatch and the node: routing, mailbox order, dead letters, publish, timers, errors."""

from __future__ import annotations

import pytest

from commy.core.actor import Actor, Context, handles
from commy.core.node import Node
from commy.errors import LocalProtocolError, RemoteProtocolError
from commy.messages import (
    Address,
    Envelope,
    Error,
    HeartbeatPing,
    HeartbeatPong,
    HeartbeatTick,
    LinkDown,
    LinkUp,
    Message,
    ServerStatus,
)
from tests.helpers.fake_context import FakeContext, deliver
from tests.helpers.fake_host import FakeHost

OK = ServerStatus.HEALTHY


def ping(seq: int) -> HeartbeatPing:
    return HeartbeatPing(seq, 0.0, OK)


class Recorder(Actor):
    """Records (handler, message); pings addressed to it with seq < 0 make it send pings onwards."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.got: list[tuple[str, Message]] = []

    @handles(HeartbeatPing)
    def on_ping(self, msg: HeartbeatPing, env: Envelope) -> None:
        self.got.append(("ping", msg))
        if msg.seq == -1:  # forward two messages to the other actor during this handler
            self.ctx.send(Address(self.ctx.address.node, "other"), ping(100))
            self.ctx.send(Address(self.ctx.address.node, "other"), ping(101))
        self.got.append(("end", msg))

    @handles(LinkUp, LinkDown)
    def on_link(self, msg: Message, env: Envelope) -> None:
        self.got.append(("link", msg))


class Child(Recorder):
    @handles(HeartbeatPing)  # overrides the base handler; LinkUp/LinkDown are inherited
    def on_ping2(self, msg: HeartbeatPing, env: Envelope) -> None:
        self.got.append(("child", msg))

    @handles(HeartbeatPong)
    def on_pong(self, msg: HeartbeatPong, env: Envelope) -> None:
        if msg.seq == 0:
            raise RemoteProtocolError("pong seq 0 makes no sense", code="bad_pong")
        if msg.seq == 1:
            raise KeyError("our bug")
        self.ctx.reply(env, ping(msg.seq))


# --------------------------------------------------------------------------- dispatch (one actor)


def test_dispatch_by_exact_type_with_inheritance_and_override() -> None:
    base, child = Recorder(FakeContext()), Child(FakeContext())
    assert deliver(base, ping(1)) and base.got == [("ping", ping(1)), ("end", ping(1))]
    assert deliver(child, ping(2)) and child.got == [("child", ping(2))]
    assert deliver(child, LinkUp("p")) and child.got[-1] == ("link", LinkUp("p"))
    assert not deliver(base, HeartbeatPong(1, 0.0, OK)) and not deliver(base, HeartbeatTick())
    assert set(Child.HANDLERS) == {HeartbeatPing, HeartbeatPong, LinkUp, LinkDown}
    assert set(Recorder.HANDLERS) == {HeartbeatPing, LinkUp, LinkDown}  # the subclass did not leak upwards


def test_one_class_handling_a_type_twice_is_refused() -> None:
    with pytest.raises(TypeError, match="Twice handles HeartbeatPing twice"):
        class Twice(Actor):
            @handles(HeartbeatPing)
            def a(self, msg: Message, env: Envelope) -> None: ...

            @handles(HeartbeatTick, HeartbeatPing)
            def b(self, msg: Message, env: Envelope) -> None: ...
    with pytest.raises(TypeError):
        handles()


def test_reply_carries_the_request_id() -> None:
    ctx = FakeContext(Address("n1", "child"))
    deliver(Child(ctx), HeartbeatPong(7, 0.0, OK), Address("n2", "asker"), msg_id=42)
    (sent,) = ctx.sent
    assert (sent.to, sent.msg, sent.request_id) == (Address("n2", "asker"), ping(7), 42)


# --------------------------------------------------------------------------- the node


def make_node(strict: bool = True) -> tuple[Node, FakeHost, list[tuple[str, str, dict[str, object]]]]:
    host = FakeHost(now=10.0)
    logs: list[tuple[str, str, dict[str, object]]] = []
    node = Node("n1", host, seed=7, strict=strict,
                log_sink=lambda n, actor, level, event, fields: logs.append((level, event, fields)))
    return node, host, logs


def test_local_sends_go_through_the_mailbox_without_reentrancy() -> None:
    node, host, _ = make_node()
    me = node.spawn("me", Recorder)
    node.spawn("other", Recorder)
    seen: list[tuple[str, int]] = []
    node.observer = lambda name, env, handled: seen.append((name, env.body.seq))  # type: ignore[attr-defined]
    node.send(Address("n1", "x"), me, ping(-1), None)
    assert node.actors["me"].got == [("ping", ping(-1)), ("end", ping(-1))]  # type: ignore[attr-defined]
    assert seen == [("me", -1), ("other", 100), ("other", 101)]  # after the handler returned, in order
    assert node.stats.delivered == 3 and host.transmitted == []


def test_remote_send_is_transmitted_with_ids_and_time() -> None:
    node, host, _ = make_node()
    addr = node.spawn("child", Child)
    first = node.send(addr, Address("n2", "peer"), ping(1), None)
    node.deliver(Envelope(9, None, Address("n2", "peer"), addr, 3.0, HeartbeatPong(5, 0.0, OK)))
    (out, reply) = host.transmitted
    assert out == Envelope(first, None, addr, Address("n2", "peer"), 10.0, ping(1))
    assert reply.request_id == 9 and reply.msg_id == first + 1 and reply.body == ping(5)
    assert node.stats.sent_remote == 2


def test_dead_letters_counted_by_type() -> None:
    node, _, logs = make_node()
    node.spawn("me", Recorder)
    node.deliver(Envelope(1, None, Address("n2", "p"), Address("n1", "nobody"), 0.0, ping(1)))
    node.deliver(Envelope(2, None, Address("n2", "p"), Address("n1", "me"), 0.0, HeartbeatTick()))
    node.deliver(Envelope(3, None, Address("n2", "p"), Address("n1", "me"), 0.0, HeartbeatTick()))
    assert node.stats.dead_letters == 3 and node.stats.delivered == 0
    assert node.stats.dead_letter_types == {"HeartbeatPing": 1, "HeartbeatTick": 2}
    assert [e for _, e, f in logs] == ["dead_letter"] * 3 and logs[0][2] == {"actor": "nobody",
                                                                              "message": "HeartbeatPing"}


def test_publish_reaches_only_the_actors_handling_the_type() -> None:
    node, _, _ = make_node()
    node.spawn("a", Recorder)
    node.spawn("b", Child)
    node.spawn("c", lambda ctx: Actor(ctx))
    node.publish(LinkDown("n3", "closed", "bye"))
    node.publish(HeartbeatTick())  # nobody handles it: a broadcast with no audience, not a dead letter
    for name in ("a", "b"):
        assert node.actors[name].got == [("link", LinkDown("n3", "closed", "bye"))]  # type: ignore[attr-defined]
    assert node.stats.delivered == 2 and node.stats.dead_letters == 0


class Ticker(Actor):
    def stopped(self) -> None:
        self.ctx.set_timer(1.0, HeartbeatPing(4, 0.0, OK))  # set after the node cancelled the others

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.fired: list[tuple[float, int]] = []
        self.cancelled = ctx.set_timer(1.0, HeartbeatPing(99, 0.0, OK))

    def started(self) -> None:
        self.ctx.set_timer(2.0, HeartbeatPing(2, 0.0, OK))
        self.ctx.set_timer(0.5, HeartbeatPing(1, 0.0, OK))
        self.ctx.cancel(self.cancelled)

    @handles(HeartbeatPing)
    def on_timer(self, msg: HeartbeatPing, env: Envelope) -> None:
        assert env.sender == env.receiver == self.ctx.address
        self.fired.append((self.ctx.now(), msg.seq))
        if msg.seq == 1:
            self.ctx.set_timer(0.0, HeartbeatPing(3, 0.0, OK))


def test_timers_fire_as_messages_in_order_and_cancel_works() -> None:
    node, host, _ = make_node()
    node.spawn("t", Ticker)
    assert host.advance(0.4) == 0
    host.advance(10)
    assert node.actors["t"].fired == [(10.5, 1), (10.5, 3), (12.0, 2)]  # type: ignore[attr-defined]
    with pytest.raises(LocalProtocolError, match="delay must be >= 0"):
        node.actors["t"].ctx.set_timer(-1, HeartbeatTick())


def test_timers_of_a_stopped_node_do_not_fire() -> None:
    node, host, _ = make_node()
    ticker = node.spawn("t", Ticker)
    actor = node.actors["t"]
    raced = [call.fn for call in host.calls if not call.cancelled]
    node.stop()
    assert host.pending == 1 and node.actors == {} and len(raced) == 2
    for fn in raced:  # callbacks a real loop may already have dequeued when the stop happened
        fn()
    host.advance(10)
    assert actor.fired == []  # type: ignore[attr-defined]
    assert node.stats.dead_letters == 0 and node.stats.delivered == 0
    assert node.send(ticker, ticker, ping(1), None) == 0 and host.transmitted == []


def test_remote_protocol_error_answers_the_sender_and_the_node_continues() -> None:
    node, host, logs = make_node(strict=True)
    node.spawn("child", Child)
    node.deliver(Envelope(5, None, Address("n2", "p"), Address("n1", "child"), 0.0, HeartbeatPong(0, 0.0, OK)))
    (err,) = host.transmitted
    assert err.body == Error("bad_pong", "pong seq 0 makes no sense") and err.request_id == 5
    assert err.receiver == Address("n2", "p") and err.sender == Address("n1", "child")
    assert node.stats.protocol_errors == 1 and ("warning", "protocol_error") in [(lv, e) for lv, e, _ in logs]
    node.deliver(Envelope(6, None, Address("n2", "p"), Address("n1", "child"), 0.0, HeartbeatPong(8, 0.0, OK)))
    assert host.transmitted[-1].body == ping(8)
    node.send(Address("n1", "local"), Address("n1", "child"), HeartbeatPong(0, 0.0, OK), None)
    assert len(host.transmitted) == 2  # a local sender gets no Error over the wire


def test_other_exceptions_propagate_in_strict_mode() -> None:
    node, _, _ = make_node(strict=True)
    node.spawn("child", Child)
    with pytest.raises(KeyError, match="our bug"):
        node.deliver(Envelope(1, None, Address("n2", "p"), Address("n1", "child"), 0.0, HeartbeatPong(1, 0.0, OK)))
    node.deliver(Envelope(2, None, Address("n2", "p"), Address("n1", "child"), 0.0, ping(3)))
    assert node.actors["child"].got[-1] == ("child", ping(3))  # type: ignore[attr-defined]


def test_other_exceptions_are_counted_and_logged_otherwise() -> None:
    node, host, logs = make_node(strict=False)
    node.spawn("child", Child)
    node.deliver(Envelope(1, None, Address("n2", "p"), Address("n1", "child"), 0.0, HeartbeatPong(1, 0.0, OK)))
    node.deliver(Envelope(2, None, Address("n2", "p"), Address("n1", "child"), 0.0, HeartbeatPong(2, 0.0, OK)))
    assert node.stats.handler_errors == 1 and node.stats.dead_letters == 0 and host.transmitted[-1].body == ping(2)
    level, event, fields = logs[0]
    assert (level, event) == ("error", "handler_error") and fields["message"] == "HeartbeatPong"
    assert "our bug" in str(fields["error"])


def test_spawn_twice_is_our_bug_and_ids_come_from_the_seed() -> None:
    node, _, _ = make_node()
    node.spawn("a", Recorder)
    with pytest.raises(LocalProtocolError, match="actor 'a' already exists"):
        node.spawn("a", Recorder)
    again, _, _ = make_node()
    again.spawn("a", Recorder)
    ids = [node.actors["a"].ctx.new_id() for _ in range(3)]
    assert ids == [again.actors["a"].ctx.new_id() for _ in range(3)] and len(set(ids)) == 3
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
