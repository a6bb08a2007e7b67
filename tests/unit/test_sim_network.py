"""The simulated network and node faults: latency, FIFO, loss, duplication, reordering,
partitions of every kind, crash, restart, pause, clock skew, broken links and rogue bytes."""

from __future__ import annotations

import pytest

from commy.codec import DEFAULT_CODEC
from commy.core.actor import Actor, Context, handles
from commy.core.node import Node
from commy.errors import UNAUTHENTICATED, LocalProtocolError
from commy.framing import FrameDecoder, encode_frame
from commy.messages import (
    Address,
    Envelope,
    Error,
    HeartbeatPing,
    HeartbeatTick,
    LinkDown,
    LinkUp,
    Message,
    MetadataExchangeAck,
    ServerStatus,
)
from sim.cluster import Fault, SimCluster
from sim.network import LinkConfig

REC = "rec"


class Recorder(Actor):
    """Records pings (with arrival time), link events and its own timer ticks."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.pings: list[tuple[float, Envelope]] = []
        self.links: list[Message] = []
        self.ticks: list[float] = []

    def started(self) -> None:
        self.ctx.set_timer(0.5, HeartbeatTick())

    @handles(HeartbeatPing)
    def on_ping(self, msg: HeartbeatPing, env: Envelope) -> None:
        self.pings.append((self.ctx.now(), env))

    @handles(LinkUp, LinkDown)
    def on_link(self, msg: Message, env: Envelope) -> None:
        self.links.append(msg)

    @handles(HeartbeatTick)
    def on_tick(self, msg: HeartbeatTick, env: Envelope) -> None:
        self.ticks.append(self.ctx.now())
        self.ctx.set_timer(0.5, HeartbeatTick())


def build(node: Node) -> None:
    node.spawn(REC, Recorder)


def cluster(net: LinkConfig = LinkConfig(), seed: int = 1, nodes: tuple[str, ...] = ("a", "b", "c"),
            **kw: object) -> SimCluster:
    return SimCluster(seed, list(nodes), build, net=net, **kw)  # type: ignore[arg-type]


def rec(c: SimCluster, node: str) -> Recorder:
    actor = c.node(node).actors[REC]
    assert isinstance(actor, Recorder)
    return actor


def ping(c: SimCluster, src: str, dst: str, seq: int) -> None:
    c.node(src).send(Address(src, REC), Address(dst, REC), HeartbeatPing(seq, 0.0, ServerStatus.HEALTHY), None)


def seqs(c: SimCluster, node: str) -> list[int]:
    out = []
    for _, env in rec(c, node).pings:
        assert isinstance(env.body, HeartbeatPing)
        out.append(env.body.seq)
    return out


def test_latency_is_within_the_configured_band_and_links_start_up() -> None:
    c = cluster()
    c.run_for(0.001)
    assert rec(c, "a").links == [LinkUp("b"), LinkUp("c")]
    start = c.node("a").host.now()
    ping(c, "a", "b", 1)
    c.run_for(0.1)
    [(arrived, env)] = rec(c, "b").pings
    assert 0.0005 <= arrived - start <= 0.0015
    assert env.sender == Address("a", REC) and env.sent_at == start  # decoded from real bytes


def test_each_directed_link_is_fifo_by_default() -> None:
    c = cluster(LinkConfig(latency=0.010, jitter=0.009))
    for i in range(300):
        ping(c, "a", "b", i)
    c.run_for(1.0)
    assert seqs(c, "b") == list(range(300))


def test_reordering_lets_messages_overtake() -> None:
    c = cluster(LinkConfig(latency=0.010, jitter=0.009, reorder=0.5), keep_rows=10_000)
    for i in range(300):
        ping(c, "a", "b", i)
    c.run_for(1.0)
    got = seqs(c, "b")
    assert sorted(got) == list(range(300)) and got != list(range(300))
    assert any(r[3] == "reorder" for r in c.trace.rows)


def test_loss_drops_about_the_configured_fraction() -> None:
    c = cluster(LinkConfig(loss=0.3), keep_rows=10_000)
    for i in range(1000):
        ping(c, "a", "b", i)
    c.run_for(1.0)
    assert 600 < len(seqs(c, "b")) < 800
    assert sum(1 for r in c.trace.rows if r[3] == "drop" and r[4][0] == "loss") == 1000 - len(seqs(c, "b"))


def test_duplication_delivers_twice() -> None:
    c = cluster(LinkConfig(duplicate=1.0))
    for i in range(10):
        ping(c, "a", "b", i)
    c.run_for(1.0)
    assert sorted(seqs(c, "b")) == sorted(list(range(10)) * 2)


def test_symmetric_partition_and_heal() -> None:
    c = cluster()
    c.partition(["a"])  # {a} | {b, c}
    for dst in ("b", "c"):
        ping(c, "a", dst, 1)
        ping(c, dst, "a", 2)
    ping(c, "b", "c", 3)
    c.run_for(0.1)
    assert seqs(c, "a") == [] and seqs(c, "b") == [] and seqs(c, "c") == [3]
    c.heal()
    ping(c, "a", "b", 4)
    c.run_for(0.1)
    assert seqs(c, "b") == [4]


def test_one_way_partition_blocks_one_direction() -> None:
    c = cluster()
    c.partition_one_way(["a"], ["b"])
    ping(c, "a", "b", 1)
    ping(c, "b", "a", 2)
    c.run_for(0.1)
    assert seqs(c, "b") == [] and seqs(c, "a") == [2]


def test_bridge_partition_keeps_the_bridge_connected() -> None:
    c = cluster()
    c.bridge(["a"], ["c"])  # b is the bridge
    for src, dst, n in (("a", "c", 1), ("c", "a", 2), ("a", "b", 3), ("c", "b", 4), ("b", "a", 5), ("b", "c", 6)):
        ping(c, src, dst, n)
    c.run_for(0.1)
    assert seqs(c, "a") == [5] and seqs(c, "c") == [6] and sorted(seqs(c, "b")) == [3, 4]


def test_a_partition_loses_what_is_in_flight() -> None:
    c = cluster(LinkConfig(latency=0.050, jitter=0.0))
    ping(c, "a", "b", 1)
    c.run_for(0.010)
    c.partition(["a"])
    c.run_for(0.1)
    assert seqs(c, "b") == []


def test_crash_discards_memory_timers_and_messages_and_restart_rebuilds() -> None:
    c = cluster()
    c.run_for(0.6)
    old, old_rec = c.node("c"), rec(c, "c")
    assert len(old_rec.ticks) == 1
    c.crash("c")
    assert old.stopped and not c.alive("c")
    ping(c, "a", "c", 1)
    c.run_for(2.0)
    assert rec(c, "a").links[-1] == LinkDown("c", "closed", "connection closed by peer")
    assert len(old_rec.ticks) == 1 and old_rec.pings == []  # nothing reached the old incarnation
    c.restart("c")
    assert c.node("c") is not old and c.incarnations["c"] == 2 and rec(c, "c").pings == []
    c.run_for(0.6)
    assert rec(c, "a").links[-1] == LinkUp("c")
    assert sorted(rec(c, "c").links, key=str) == [LinkUp("a"), LinkUp("b")]
    assert len(rec(c, "c").ticks) == 1
    ping(c, "a", "c", 2)
    c.run_for(0.1)
    assert seqs(c, "c") == [2]
    with pytest.raises(ValueError):
        c.restart("c")


def test_pause_holds_events_and_replays_them_in_order_at_resume() -> None:
    c = cluster()
    c.run_for(0.1)
    c.pause("b")
    for i in range(5):
        ping(c, "a", "b", i)
    c.run_for(2.0)  # three timer ticks came due meanwhile
    assert seqs(c, "b") == [] and rec(c, "b").ticks == []
    c.resume("b")
    c.run_for(0.0)
    assert seqs(c, "b") == [0, 1, 2, 3, 4]
    assert rec(c, "b").ticks == [pytest.approx(c.node("b").host.now())]  # one pending tick, fired late
    assert not c.paused("b")


def test_clock_skew_and_jumps_move_only_that_node_clock() -> None:
    c = cluster()
    c.run_for(1.0)
    c.set_skew("a", 5.0)
    assert c.node("a").host.now() - c.node("b").host.now() == pytest.approx(5.0)
    c.jump_clock("a", -7.0)
    assert c.node("a").host.now() - c.node("b").host.now() == pytest.approx(-2.0)
    c.crash("a")
    c.restart("a")  # skew belongs to the machine: it survives a restart
    assert c.node("a").host.now() - c.node("b").host.now() == pytest.approx(-2.0)


def test_break_link_sends_link_down_then_up_and_drops_meanwhile() -> None:
    c = cluster(reconnect_delay=0.2)
    c.run_for(0.01)
    c.break_link("a", "b")
    ping(c, "a", "b", 1)
    c.run_for(0.1)
    assert rec(c, "a").links[-1] == LinkDown("b", "closed", "connection broken")
    assert rec(c, "b").links[-1] == LinkDown("a", "closed", "connection closed by peer")
    c.run_for(0.2)
    assert rec(c, "a").links[-1] == LinkUp("b") and rec(c, "b").links[-1] == LinkUp("a")
    ping(c, "a", "b", 2)
    c.run_for(0.1)
    assert seqs(c, "b") == [2]


def test_a_spoofed_sender_closes_the_link_with_a_typed_reason() -> None:
    c = cluster()
    c.run_for(0.01)
    c.node("a").send(Address("c", REC), Address("b", REC), HeartbeatPing(1, 0.0, ServerStatus.HEALTHY), None)
    c.run_for(0.01)
    down = rec(c, "b").links[-1]
    assert isinstance(down, LinkDown) and down.peer == "a" and down.reason == "bad_request"
    sender_side = rec(c, "a").links[-1]  # the Error frame tells the sender why
    assert isinstance(sender_side, LinkDown) and sender_side.peer == "b" and sender_side.reason == "bad_request"
    assert seqs(c, "b") == []
    c.run_for(0.1)
    ping(c, "a", "b", 2)  # reconnected
    c.run_for(0.1)
    assert seqs(c, "b") == [2]


def test_rogue_bytes_get_an_error_frame_and_authenticated_envelopes_get_through() -> None:
    c = cluster()
    answer = c.network.inject_raw("b", b"\x00\x00\x00\x03abc")
    assert answer.startswith(b"\x00\x00\x00") and b"not valid msgpack" in answer
    env = Envelope(9, None, Address("c", REC), Address("b", REC), 1.0, HeartbeatPing(7, 0.0, ServerStatus.HEALTHY))
    (ack,) = FrameDecoder().feed(c.network.inject_raw("b", encode_frame(DEFAULT_CODEC.encode(env)), hello_as="c"))
    assert type(DEFAULT_CODEC.decode_message(ack)) is MetadataExchangeAck  # the real handshake ran
    assert seqs(c, "b") == [7]
    assert b"not valid msgpack" in bytes(c.network.rogue_out)


def test_a_rogue_without_the_secret_is_refused_and_delivers_nothing() -> None:
    c = cluster()
    env = Envelope(9, None, Address("c", REC), Address("b", REC), 1.0, HeartbeatPing(8, 0.0, ServerStatus.HEALTHY))
    answer = c.network.inject_raw("b", encode_frame(DEFAULT_CODEC.encode(env)), hello_as="c", secret=b"wrong" * 8)
    frames = FrameDecoder().feed(answer)
    refusal = DEFAULT_CODEC.decode(frames[-1])
    assert isinstance(refusal.body, Error) and refusal.body.code == UNAUTHENTICATED
    assert c.network.inject_raw("b", encode_frame(DEFAULT_CODEC.encode(env))).find(b"unauthenticated") > 0
    c.run_for(0.1)
    assert seqs(c, "b") == []


def test_encoding_bugs_surface_at_the_sender() -> None:
    c = cluster()
    with pytest.raises(LocalProtocolError):
        ping(c, "a", "b", 2**70)  # msgpack cannot pack it: the codec runs on every message


def test_scheduled_faults_and_determinism() -> None:
    faults = [Fault(0.2, "partition", (["a"],)), Fault(0.4, "heal"), Fault(0.5, "crash", ("c",)),
              Fault(0.7, "restart", ("c",)), Fault(0.8, "configure", kwargs={"loss": 0.5})]

    def run(seed: int) -> str:
        c = cluster(LinkConfig(latency=0.01, jitter=0.005), seed=seed, faults=faults)
        for i in range(50):
            ping(c, "a", "b", i)
            c.run_for(0.02)
        assert c.incarnations["c"] == 2
        return c.trace.hash

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_fault_actions_and_node_ids_are_validated() -> None:
    with pytest.raises(ValueError):
        SimCluster(1, ["a", "a"])
    c = cluster()
    with pytest.raises(ValueError):
        c.schedule(1.0, "explode")
    with pytest.raises(ValueError):
        LinkConfig(loss=1.5)


def test_a_reply_to_a_node_without_a_link_is_dropped_not_a_crash() -> None:
    c = cluster()
    ping7 = HeartbeatPing(7, 0.0, ServerStatus.HEALTHY)
    env = Envelope(9, None, Address("b", REC), Address("nowhere", REC), 1.0, ping7)
    c.hosts["b"].transmit(env)  # what a reply to a rogue's claimed id does
    c.run_for(0.1)
    assert c.network.dropped >= 1
