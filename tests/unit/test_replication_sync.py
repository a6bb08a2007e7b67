"""Replicator pull side: digests, sync requests and answers, resurrection (EnsureService)."""

from __future__ import annotations

from commy.core.placement import rendezvous
from commy.messages import (
    Address,
    Clock,
    ClockCatchingUp,
    ClockSynced,
    EnsureService,
    FileTransferRequest,
    PeerStateChanged,
    ReplicationTick,
    ServiceClocks,
    ServiceDigest,
    ServiceReady,
    SyncServiceRequest,
    SyncServiceResponse,
)
from tests.helpers.fake_context import deliver
from tests.helpers.replicas import Mesh, S, T, rec, sent_of, solo, stamp

PEER = Address("n2", "replicator")


def digest(rep, clocks, sender=PEER, service=S):  # type: ignore[no-untyped-def]
    deliver(rep, ServiceDigest((ServiceClocks(T, service, tuple(Clock(o, s) for o, s in clocks)),)), sender)


def test_the_tick_sends_every_held_service_to_every_live_member() -> None:
    _rep, ctx, store = solo(anti_entropy_interval=0.5)
    store.open(T, S, create=True).set_clock(1, stamp(1, 1))
    store.open("other", "s", create=True)
    ctx.advance(0.5)
    out = sent_of(ctx, ServiceDigest)
    assert sorted(s.to.node for s in out) == ["n2", "n3"]
    assert out[0].msg.services == (ServiceClocks("acme", S, (Clock(1, stamp(1, 1)),)),  # type: ignore[attr-defined]
                                   ServiceClocks("other", "s", ()))
    assert any(type(t.msg) is ReplicationTick for t in ctx.timers)


def test_a_digest_ahead_of_us_starts_one_sync() -> None:
    rep, ctx, store = solo()
    store.open(T, S, create=True).set_clock(2, stamp(1, 2))
    digest(rep, [(2, stamp(1, 2))])
    assert not sent_of(ctx, SyncServiceRequest)
    digest(rep, [(2, stamp(3, 2))])
    digest(rep, [(2, stamp(4, 2))])
    [req] = sent_of(ctx, SyncServiceRequest)
    assert req.to == PEER and req.msg.clocks == (Clock(2, stamp(1, 2)),)  # type: ignore[attr-defined]
    assert rep.holdings["n2"] == {(T, S)}


def test_a_missing_service_is_fetched_only_by_its_replicas() -> None:
    services = [f"s{i}" for i in range(20)]
    mine = [s for s in services if "n1" in rendezvous(T, s, ["n1", "n2", "n3"], 2)]
    rep, ctx, _store = solo()
    for s in services:
        digest(rep, [(2, stamp(1, 2))], service=s)
    asked = sorted(s.msg.service for s in sent_of(ctx, SyncServiceRequest))  # type: ignore[attr-defined]
    assert asked == sorted(mine) and 0 < len(mine) < len(services)


def test_an_empty_service_a_peer_holds_is_created_by_its_replicas_without_a_sync() -> None:
    services = [f"s{i}" for i in range(20)]
    mine = {s for s in services if "n1" in rendezvous(T, s, ["n1", "n2", "n3"], 2)}
    rep, ctx, store = solo()
    for s in services:
        digest(rep, [], service=s)  # held by n2, never written
    assert not sent_of(ctx, SyncServiceRequest)
    assert {s for s in services if store.exists(T, s)} == mine


def test_a_sync_answer_holds_what_the_requester_lacks_or_says_transfer() -> None:
    rep, ctx, store = solo(max_sync_bytes=5)
    h = store.open(T, S, create=True)
    h.write("x", b"old", stamp=stamp(1, 1))
    h.write("y", b"new", stamp=stamp(2, 3))
    h.set_clock(1, stamp(1, 1))
    h.set_clock(3, stamp(2, 3))
    deliver(rep, SyncServiceRequest(T, S, (Clock(1, stamp(1, 1)),)), PEER)
    [answer] = ctx.take_sent()
    assert answer.msg == SyncServiceResponse(T, S, (rec("y", b"new", stamp(2, 3)),),
                                             (Clock(1, stamp(1, 1)), Clock(3, stamp(2, 3))), False)
    deliver(rep, SyncServiceRequest(T, S, ()), PEER)
    assert ctx.take_sent()[0].msg == SyncServiceResponse(T, S, (), answer.msg.clocks, True)


def test_an_answer_is_applied_then_the_clocks_joined() -> None:
    rep, _ctx, store = solo()
    h = store.open(T, S, create=True)
    h.write("x", b"mine", stamp=stamp(5, 1))
    h.set_clock(1, stamp(5, 1))
    theirs = (Clock(1, stamp(2, 1)), Clock(2, stamp(3, 2)))
    deliver(rep, SyncServiceResponse(T, S, (rec("x", b"theirs", stamp(3, 2)), rec("y", b"y", stamp(1, 2))),
                                     theirs, False), PEER)
    assert {e.name: e.value for e in h.entries()} == {"x": b"mine", "y": b"y"}
    assert h.clocks() == {1: stamp(5, 1), 2: stamp(3, 2)}


def test_a_transfer_answer_starts_a_snapshot_and_joins_no_clocks_yet() -> None:
    rep, ctx, store = solo()
    deliver(rep, SyncServiceResponse(T, S, (), (Clock(2, stamp(3, 2)),), True), PEER)
    [req] = sent_of(ctx, FileTransferRequest)
    assert req.to == PEER and req.msg.from_chunk == 0 and not store.exists(T, S)  # type: ignore[attr-defined]


def test_ensure_with_no_known_holder_answers_at_once() -> None:
    rep, ctx, _store = solo()
    deliver(rep, EnsureService(T, S), Address("n1", "clients"))
    assert [(s.to, s.msg) for s in ctx.sent] == [(Address("n1", "clients"), ServiceReady(T, S, False))]


def test_ensure_fetches_from_every_live_holder() -> None:
    mesh = Mesh(3)
    h = mesh.stores["n2"].open(T, S, create=True)
    h.write("x", b"v", stamp=stamp(1, 2))
    h.set_clock(2, stamp(1, 2))
    mesh.stores["n3"].open(T, S, create=True)
    for node in ("n2", "n3"):
        mesh.ctxs[node].advance(1000)  # their digests: n1 learns who holds the service
    mesh.pump()
    deliver(mesh.reps["n1"], EnsureService(T, S), Address("n1", "clients"))
    mesh.pump()
    assert [s.msg for _, s in mesh.outbox if isinstance(s.msg, ServiceReady)] == [ServiceReady(T, S, True)]
    assert mesh.view("n1") == mesh.view("n2")


def test_ensure_gives_up_after_its_timeout() -> None:
    rep, ctx, _store = solo(ensure_timeout=2.0)
    digest(rep, [])
    ctx.take_sent()
    deliver(rep, EnsureService(T, S), Address("n1", "clients"))
    deliver(rep, EnsureService(T, S), Address("n1", "clients"))
    assert len(sent_of(ctx, SyncServiceRequest)) == 1
    ctx.advance(2.0)
    assert [s.msg for s in sent_of(ctx, ServiceReady)] == [ServiceReady(T, S, False)] * 2


def test_ensure_answers_once_one_holder_sent_state_without_waiting_for_the_others() -> None:
    # Fixed: it waited for every holder asked, a crashed one not yet seen DOWN included, so a client
    # resuming on a node without its service waited ensure_timeout (2.09 s in failover-wide, seed 1).
    rep, ctx, store = solo(ensure_timeout=2.0)
    digest(rep, [])
    digest(rep, [], sender=Address("n3", "replicator"))
    ctx.take_sent()
    deliver(rep, EnsureService(T, S), Address("n1", "clients"))
    assert sorted(s.to.node for s in sent_of(ctx, SyncServiceRequest)) == ["n2", "n3"]
    deliver(rep, SyncServiceResponse(T, S, (), (), False), Address("n3", "replicator"))  # no state there
    assert not sent_of(ctx, ServiceReady)  # n2 may still have it
    state = SyncServiceResponse(T, S, (rec("x", b"v", stamp(1, 2)),), (Clock(2, stamp(1, 2)),), False)
    deliver(rep, state, PEER)  # n2 answers; (had n3 crashed, it never would)
    assert [s.msg for s in sent_of(ctx, ServiceReady)] == [ServiceReady(T, S, True)]
    assert store.open(T, S).read("x") is not None and not ctx.timers[1:]  # the ensure's timer is gone
    ctx.advance(5.0)
    assert len(sent_of(ctx, ServiceReady)) == 1


def test_ensure_answered_by_no_holder_with_state_says_not_fetched() -> None:
    rep, ctx, _store = solo()
    digest(rep, [])
    deliver(rep, EnsureService(T, S), Address("n1", "clients"))
    deliver(rep, SyncServiceResponse(T, S, (), (), False), PEER)
    assert [s.msg for s in sent_of(ctx, ServiceReady)] == [ServiceReady(T, S, False)]


# ---- catching up at start


def test_a_starting_node_observes_every_live_peers_digest_before_its_clock_is_synced() -> None:
    rep, ctx, _store = solo(cluster_size=3)  # n1, with n2 and n3 live
    assert ctx.published == []  # the hub is spawned after the replicator: told at the next turn
    ctx.advance(0.0)
    assert ctx.published == [ClockCatchingUp(1_700_000_000.0)]
    old = stamp(60_000, 1)  # what n1 stamped before it lost its disk, with its clock a minute ahead
    digest(rep, [(1, old), (2, stamp(1, 2))])
    assert rep.clock.last >= old and len(ctx.published) == 1  # n3 may hold later stamps of ours
    ctx.current += 0.2
    digest(rep, [], sender=Address("n3", "replicator"))
    [synced] = ctx.published[1:]
    assert isinstance(synced, ClockSynced) and synced.complete and round(synced.waited, 3) == 0.2
    assert rep.clock.tick() > old
    digest(rep, [])
    assert len(ctx.published) == 2  # once


def test_a_peer_seen_down_is_not_waited_for() -> None:
    rep, ctx, _store = solo(cluster_size=3)
    digest(rep, [])
    deliver(rep, PeerStateChanged("n3", "healthy", "down", 0.0), Address("n1", "heartbeat"))
    assert [type(m) for m in ctx.published] == [ClockSynced]  # (before the hub was told: it never will be)


def test_a_member_not_heard_yet_is_waited_for() -> None:
    rep, ctx, _store = solo(live=False, cluster_size=3)  # members n2 and n3, the heartbeat monitor hears neither yet
    digest(rep, [])  # n2's digest came first
    assert not [m for m in ctx.published if isinstance(m, ClockSynced)]
    digest(rep, [], sender=Address("n3", "replicator"))
    assert [m.complete for m in ctx.published if isinstance(m, ClockSynced)] == [True]


def test_catching_up_ends_after_three_intervals_when_the_peers_stay_silent() -> None:
    _rep, ctx, _store = solo(anti_entropy_interval=0.5, cluster_size=3)
    ctx.advance(1.45)
    assert ctx.published == [ClockCatchingUp(1_700_000_000.0)]
    ctx.advance(0.6)  # the first tick at or past 1.5 s
    synced = ctx.published[-1]
    assert isinstance(synced, ClockSynced) and not synced.complete and 1.5 <= synced.waited < 2.0


def test_a_one_node_cluster_never_catches_up() -> None:
    rep, ctx, _store = solo(peers=(), cluster_size=1)
    ctx.advance(10.0)
    assert ctx.published == [] and rep.catching_up_since is None


def test_a_peer_that_becomes_live_gets_our_digest_at_once() -> None:
    rep, ctx, store = solo(live=False, cluster_size=3)
    store.open(T, S, create=True).set_clock(1, stamp(1, 1))
    deliver(rep, PeerStateChanged("n2", "joining", "healthy", 0.0), Address("n1", "heartbeat"))
    [out] = sent_of(ctx, ServiceDigest)  # not at the next tick: n2 may be a restarted node catching up
    assert out.to == PEER and out.msg == ServiceDigest((ServiceClocks(T, S, (Clock(1, stamp(1, 1)),)),))
    deliver(rep, PeerStateChanged("n2", "healthy", "suspected", 0.0), Address("n1", "heartbeat"))
    deliver(rep, PeerStateChanged("n2", "suspected", "healthy", 0.0), Address("n1", "heartbeat"))
    assert len(sent_of(ctx, ServiceDigest)) == 1  # it never stopped being live
