"""Heartbeat monitor (with a FakeContext) and the membership transition table."""

from __future__ import annotations

import itertools

import pytest

from commy.core.heartbeat import HEARTBEAT, HeartbeatConfig, HeartbeatMonitor
from commy.core.membership import TRANSITIONS, PeerState, PeerTable
from commy.errors import LocalProtocolError
from commy.messages import (
    Address,
    HeartbeatPing,
    HeartbeatPong,
    HeartbeatTick,
    MemberInfo,
    MemberLeft,
    MemberUp,
    PeerStateChanged,
    ServerStatus,
)
from tests.helpers.fake_context import FakeContext, deliver

OK = ServerStatus.HEALTHY


def monitor(peers: tuple[str, ...] = ("n1", "n2", "n3"), **config: float) -> tuple[HeartbeatMonitor, FakeContext]:
    ctx = FakeContext(Address("n1", HEARTBEAT), now=100.0, seed=3)
    hb = ctx.bind(HeartbeatMonitor(ctx, list(peers), HeartbeatConfig(**config)))  # type: ignore[arg-type]
    hb.started()
    assert [type(t.msg) for t in ctx.timers] == [HeartbeatTick] and 100.0 <= ctx.timers[0].due <= 100.3
    return hb, ctx  # type: ignore[return-value]


def tick(ctx: FakeContext) -> dict[str, int]:
    """Fire the next tick; returns {peer: ping seq} of the pings it sent."""
    assert type(ctx.fire_next()) is HeartbeatTick
    sent = ctx.take_sent()
    assert all(s.to.name == HEARTBEAT and type(s.msg) is HeartbeatPing and s.msg.sent_at == ctx.now() for s in sent)
    return {s.to.node: s.msg.seq for s in sent}  # type: ignore[attr-defined]


def pong(hb: HeartbeatMonitor, peer: str, seq: int, sent_at: float = 0.0) -> None:
    deliver(hb, HeartbeatPong(seq, sent_at, OK), Address(peer, HEARTBEAT))


def states(hb: HeartbeatMonitor) -> dict[str, str]:
    return {p: v.state.value for p, v in hb.table.views.items()}


def test_pings_every_peer_but_itself_each_tick_with_increasing_seq() -> None:
    _, ctx = monitor()
    first = ctx.timers[0].due
    assert [tick(ctx) for _ in range(3)] == [{"n2": 1, "n3": 1}, {"n2": 2, "n3": 2}, {"n2": 3, "n3": 3}]
    assert ctx.now() == pytest.approx(first + 0.6) and len(ctx.timers) == 1
    assert ctx.advance(0.3) == [HeartbeatTick()]


def test_first_tick_is_spread_by_the_seeded_rng() -> None:
    dues = {monitor()[1].timers[0].due for _ in range(2)}
    assert len(dues) == 1  # same seed, same offset
    ctx = FakeContext(Address("n1", HEARTBEAT), seed=4)
    HeartbeatMonitor(ctx, ["n2"]).started()
    assert ctx.timers[0].due not in dues


def test_pings_are_answered_with_the_request_id_even_from_strangers() -> None:
    hb, ctx = monitor()
    hb.status = ServerStatus.DEGRADED
    deliver(hb, HeartbeatPing(5, 42.0, OK), Address("n9", HEARTBEAT), msg_id=77)
    (sent,) = ctx.sent
    assert (sent.to, sent.msg, sent.request_id) == (Address("n9", HEARTBEAT), HeartbeatPong(5, 42.0,
                                                                                           ServerStatus.DEGRADED), 77)


def test_joining_healthy_suspected_down_and_back() -> None:
    hb, ctx = monitor()
    assert states(hb) == {"n2": "joining", "n3": "joining"}
    history: list[dict[str, str]] = []
    for _ in range(6):  # n3 answers every ping at once; n2 never answers
        seqs = tick(ctx)
        pong(hb, "n3", seqs["n3"], ctx.now())
        history.append(states(hb))
    assert [h["n2"] for h in history] == ["joining", "joining", "suspected", "suspected", "suspected", "down"]
    assert all(h["n3"] == "healthy" for h in history) and hb.table.views["n3"].rtt == 0.0
    assert hb.table.views["n2"].missed == 5
    tick(ctx)
    assert states(hb)["n2"] == "down"  # stays down, no repeated event
    ctx.current += 0.1
    pong(hb, "n2", 3, sent_at=ctx.now() - 2.0)  # a late answer to an old ping
    view = hb.table.views["n2"]
    assert view.state is PeerState.HEALTHY and view.missed == 0 and view.rtt == pytest.approx(2.0)
    assert [(e.peer, e.old, e.new) for e in ctx.published] == [  # type: ignore[attr-defined]
        ("n3", "joining", "healthy"), ("n2", "joining", "suspected"), ("n2", "suspected", "down"),
        ("n2", "down", "healthy")]
    assert all(type(e) is PeerStateChanged for e in ctx.published)
    assert ctx.log.events("info") == ["peer_state"] * 4


def test_down_comes_1_5_to_1_8_s_after_the_last_answer() -> None:
    for delay in (0.0, 0.1, 0.29):
        hb, ctx = monitor(("n1", "n2"))
        for _ in range(3):
            seqs = tick(ctx)
            ctx.current += delay
            pong(hb, "n2", seqs["n2"])
        last_answer = ctx.now()
        while hb.table.state("n2") is not PeerState.DOWN:
            tick(ctx)
        assert 1.5 <= ctx.now() - last_answer <= 1.8 + 1e-9


def test_stale_duplicate_and_unsolicited_pongs_change_nothing() -> None:
    hb, ctx = monitor(("n2",))
    for _ in range(4):
        tick(ctx)
    pong(hb, "n2", 2)
    assert hb.table.views["n2"].last_acked_seq == 2
    tick(ctx)  # seq 5 out; 3 and 4 went unanswered since 2: one miss
    tick(ctx)
    before, published = states(hb), list(ctx.published)
    view = hb.table.views["n2"]
    snapshot = (view.missed, view.last_acked_seq, view.rtt)
    assert view.state is PeerState.SUSPECTED and view.missed == 2
    for seq in (2, 1, 0, -5, 7, 2**40):  # duplicate, stale, never sent
        pong(hb, "n2", seq)
    pong(hb, "n9", 5)  # not a configured peer
    assert states(hb) == before and ctx.published == published and (view.missed, view.last_acked_seq,
                                                                     view.rtt) == snapshot
    pong(hb, "n2", 6)
    assert hb.table.state("n2") is PeerState.HEALTHY


def test_left_peers_are_not_pinged_nor_revived() -> None:
    hb, ctx = monitor()
    tick(ctx)
    hb.table.move("n3", PeerState.LEFT, ctx.now())
    assert tick(ctx) == {"n2": 2}
    pong(hb, "n3", 1)
    assert hb.table.state("n3") is PeerState.LEFT


@pytest.mark.parametrize("bad", [{"interval": 0}, {"interval": -1}, {"interval": float("nan")},
                                 {"interval": float("inf")}, {"suspect_after": 0}, {"suspect_after": 6},
                                 {"suspect_after": 3, "down_after": 2}])
def test_config_validation(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"^heartbeat[. ]"):
        HeartbeatConfig(**bad)  # type: ignore[arg-type]


def test_config_suspect_equal_to_down_goes_straight_down() -> None:
    _, ctx = monitor(("n2",), suspect_after=2, down_after=2)
    for _ in range(3):
        tick(ctx)
    assert [(e.old, e.new) for e in ctx.published] == [("joining", "down")]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("old", "new"), list(itertools.product(PeerState, PeerState)),
                         ids=lambda s: s.name)
def test_membership_transition_table(old: PeerState, new: PeerState) -> None:
    table = PeerTable(["p"])
    table.views["p"].state = old
    if old is new:
        assert table.move("p", new, 5.0) is None
    elif new in TRANSITIONS[old]:
        assert table.move("p", new, 5.0) == PeerStateChanged("p", old.value, new.value, 5.0)
        assert table.views["p"].changed_at == 5.0 and table.state("p") is new
    else:
        with pytest.raises(LocalProtocolError, match=f"peer p: no transition {old.name} -> {new.name}"):
            table.move("p", new, 5.0)
        assert table.state("p") is old and table.views["p"].changed_at == 0.0


def test_transition_table_matches_the_design() -> None:
    s = PeerState
    assert s.HEALTHY in TRANSITIONS[s.DOWN] and s.HEALTHY in TRANSITIONS[s.SUSPECTED]  # recovery
    assert TRANSITIONS[s.LEFT] == {s.JOINING} and all(s.LEFT in TRANSITIONS[x] for x in s if x is not s.LEFT)
    assert s.JOINING not in TRANSITIONS[s.HEALTHY] | TRANSITIONS[s.SUSPECTED] | TRANSITIONS[s.DOWN]


def test_the_peers_own_ping_counts_as_hearing_from_it() -> None:
    hb, ctx = monitor(("n1", "n2"))
    for _ in range(4):  # n2 answers none of our pings ...
        tick(ctx)
    assert states(hb)["n2"] == "suspected"
    deliver(hb, HeartbeatPing(1, 0.0, OK), Address("n2", HEARTBEAT))  # ... but its own ping arrives
    assert states(hb)["n2"] == "healthy" and hb.table.views["n2"].missed == 0
    assert [type(s.msg) for s in ctx.take_sent()] == [HeartbeatPong]
    for _ in range(5):
        tick(ctx)
    assert states(hb)["n2"] == "down"  # silence again: DOWN after 5 missed rounds, as before


# ---- peers from the membership actor


def up(hb: HeartbeatMonitor, peer: str, incarnation: int = 1) -> None:
    member = MemberInfo(peer, int(peer[1:]), "h", 1, "ws://h", incarnation)
    deliver(hb, MemberUp(member), Address("n1", "membership"))


def left(hb: HeartbeatMonitor, peer: str) -> None:
    deliver(hb, MemberLeft(peer), Address("n1", "membership"))


def transitions(ctx: FakeContext) -> list[tuple[str, str, str]]:
    out = [(e.peer, e.old, e.new) for e in ctx.published]  # type: ignore[attr-defined]
    ctx.published.clear()
    return out


def test_member_up_starts_watching_a_peer_and_ignores_itself_and_repeats() -> None:
    hb, ctx = monitor(("n1",))
    assert tick(ctx) == {}
    up(hb, "n1")
    up(hb, "n4")
    up(hb, "n4")
    assert states(hb) == {"n4": "joining"} and tick(ctx) == {"n4": 1}
    pong(hb, "n4", 1)
    up(hb, "n4", 2)  # it restarted: nothing to do while it is not LEFT
    assert states(hb) == {"n4": "healthy"} and hb.incarnations == {"n4": 2}
    assert transitions(ctx) == [("n4", "joining", "healthy")]


def test_a_left_peer_is_never_pinged_nor_marked_down_until_a_new_incarnation() -> None:
    hb, ctx = monitor(("n1", "n2"))
    up(hb, "n3")
    seqs = tick(ctx)
    pong(hb, "n3", seqs["n3"])
    left(hb, "n3")
    left(hb, "n9")  # never watched: nothing
    for _ in range(10):
        assert "n3" not in tick(ctx)
    deliver(hb, HeartbeatPing(1, 0.0, OK), Address("n3", HEARTBEAT))  # its last pings: answered, no revival
    assert [type(s.msg) for s in ctx.take_sent()] == [HeartbeatPong]
    assert states(hb) == {"n2": "down", "n3": "left"}
    assert ("n3", "healthy", "left") in transitions(ctx)
    up(hb, "n3", 0)  # an older process: ignored
    assert states(hb)["n3"] == "left"
    up(hb, "n3", 2)
    assert states(hb)["n3"] == "joining" and transitions(ctx) == [("n3", "left", "joining")]
    view = hb.table.views["n3"]
    assert view.missed == 0 and view.last_acked_seq == view.last_sent_seq
    history = []
    for _ in range(6):  # the new incarnation never answers: DOWN after five missed rounds, not sooner
        tick(ctx)
        history.append(states(hb)["n3"])
    assert history == ["joining", "joining", "suspected", "suspected", "suspected", "down"]


def test_static_peers_can_leave_and_come_back_through_membership() -> None:
    hb, ctx = monitor(("n1", "n2"))
    left(hb, "n2")
    up(hb, "n2", 1)
    assert transitions(ctx) == [("n2", "joining", "left"), ("n2", "left", "joining")]
