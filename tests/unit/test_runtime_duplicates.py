"""One connection per pair of nodes, and the bounded queue while a peer is away.

The choice between duplicate connections is checked twice: on fake connections (every case of the
rule, and which side retires which loser), and with two real transports that dial each other at
the same instant, again and again, and must end up agreeing on one socket with traffic in order.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import cast

import pytest

from commy.core.node import Node
from commy.messages import Address, HeartbeatPing, ServerStatus
from commy.runtime.loop import run
from commy.runtime.standalone import RunningNode, start_node
from commy.runtime.tcp import TcpConfig, TcpTransport
from commy.runtime.tcp_conn import Connection
from tests.conformance.harness import PROBE, Probe
from tests.helpers.aio import probe, until
from tests.helpers.fake_host import FakeHost
from tests.helpers.link_peer import SECRET

LOOPBACK = "127.0.0.1"


@dataclass(eq=False)
class FakeConn:
    dialer: str
    seq: int
    outbound: bool
    retired: bool = False

    def retire(self) -> None:
        self.retired = True


def resolve(local: str, peer: str, conns: list[FakeConn]) -> tuple[FakeConn | None, list[FakeConn]]:
    loop = asyncio.new_event_loop()
    try:
        transport = TcpTransport(Node(local, FakeHost(), 1), (LOOPBACK, 0), secret=SECRET, loop=loop)
        state = transport._peer(peer)
        state.conns = cast(list[Connection], list(conns))
        transport._resolve(state)
        return cast(FakeConn | None, state.active), cast(list[FakeConn], state.conns)
    finally:
        loop.close()


def test_the_connection_dialed_by_the_lower_id_wins_on_both_sides() -> None:
    # "a" < "b": the a-dialed connection is kept whichever became ready first.
    for order in ((0, 1), (1, 0)):
        at_a = [FakeConn("a", 1, outbound=True), FakeConn("b", 2, outbound=False)]
        at_a = [at_a[i] for i in order]
        active, kept = resolve("a", "b", at_a)
        assert active is not None and active.dialer == "a"
        # "a" does not close b's connection: b dialed it, so b retires it.
        assert not any(c.retired for c in at_a) and len(kept) == 2

        at_b = [FakeConn("a", 1, outbound=False), FakeConn("b", 2, outbound=True)]
        at_b = [at_b[i] for i in order]
        active, kept = resolve("b", "a", at_b)
        assert active is not None and active.dialer == "a"
        assert [c.dialer for c in at_b if c.retired] == ["b"] and [c.dialer for c in kept] == ["a"]


def test_between_two_connections_from_one_dialer_the_newer_wins() -> None:
    old, new = FakeConn("a", 1, outbound=False), FakeConn("a", 5, outbound=False)
    active, kept = resolve("b", "a", [old, new])
    assert active is new and old.retired and kept == [new]


def test_a_lone_connection_from_the_higher_id_is_used() -> None:
    only = FakeConn("b", 3, outbound=False)
    active, kept = resolve("a", "b", [only])
    assert active is only and kept == [only] and not only.retired




def the_socket(r: RunningNode, peer: str) -> tuple[object, object]:
    conn = r.transport.peers[peer].active
    assert conn is not None and conn.transport is not None
    return conn.transport.get_extra_info("sockname"), conn.transport.get_extra_info("peername")


@pytest.mark.parametrize("uvloop", [True, False])
def test_simultaneous_dials_settle_on_one_shared_connection(uvloop: bool) -> None:
    async def main() -> None:
        config = TcpConfig(dial_grace=0.001, backoff_initial=0.001, backoff_cap=0.01)  # collide on purpose
        a = await start_node("a", (LOOPBACK, 0), secret=SECRET, heartbeat=None, actors={PROBE: Probe}, tcp=config,
                             seed=1)
        b = await start_node("b", (LOOPBACK, 0), secret=SECRET, heartbeat=None, actors={PROBE: Probe}, tcp=config,
                             seed=2)
        try:
            a.transport.add_peer("b", b.address)
            b.transport.add_peer("a", a.address)
            sent = 0
            for _ in range(8):
                assert await until(lambda: a.transport.settled() and b.transport.settled(), 3.0)
                # Both ends use the same socket: a's local address is b's remote one.
                (a_local, a_remote), (b_local, b_remote) = the_socket(a, "b"), the_socket(b, "a")
                assert a_local == b_remote and a_remote == b_local
                for _ in range(50):
                    a.node.send(Address("a", PROBE), Address("b", PROBE),
                                HeartbeatPing(sent, 0.0, ServerStatus.HEALTHY), None)
                    sent += 1
                assert await until(lambda n=sent: len(probe(b).received) == n, 3.0)
                a.transport.drop_peer("b")
            assert [e.body.seq for e in probe(b).received] == list(range(sent))  # type: ignore[attr-defined]
        finally:
            await a.close()
            await b.close()

    run(main(), prefer_uvloop=uvloop)


def test_the_queue_keeps_the_newest_envelopes_while_the_peer_is_away() -> None:
    async def main() -> None:
        with socket.socket() as s:  # a port nobody listens on, yet
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        config = TcpConfig(queue_limit=10, backoff_initial=0.01, backoff_cap=0.05)
        a = await start_node("a", (LOOPBACK, 0), {"b": (LOOPBACK, port)}, secret=SECRET, heartbeat=None,
                             actors={PROBE: Probe}, tcp=config)
        b: RunningNode | None = None
        try:
            for seq in range(25):
                a.node.send(Address("a", PROBE), Address("b", PROBE), HeartbeatPing(seq, 0.0, ServerStatus.HEALTHY),
                            None)
            assert a.transport.stats.queue_dropped == 15 and a.transport.peers["b"].dropped == 15
            await asyncio.sleep(0.1)  # a few refused dials
            b = await start_node("b", (LOOPBACK, port), secret=SECRET, heartbeat=None, actors={PROBE: Probe},
                                 tcp=config)
            received = probe(b).received
            assert await until(lambda: len(received) >= 10, 3.0)
            assert [e.body.seq for e in received] == list(range(15, 25))  # type: ignore[attr-defined]
        finally:
            await a.close()
            if b is not None:
                await b.close()

    run(main())
