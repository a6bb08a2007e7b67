"""Catalog sync: one actor on the fake context (pushes, digests, merges, peers), then three
simulated nodes whose catalogs converge after changes, a partition and a heal."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from commy.core.actor import Actor, Context, handles
from commy.core.catalog import Catalog
from commy.core.catalog_records import KdfParams
from commy.core.catalog_sync import CATALOG_SYNC, CatalogSync, digest_of
from commy.core.node import Node
from commy.core.permissions import Permission
from commy.messages import (
    Address,
    CatalogChanged,
    CatalogDigest,
    CatalogPush,
    CatalogSyncTick,
    Envelope,
    MemberInfo,
    MemberLeft,
    MemberUp,
    MergeCatalog,
    Message,
    PeerStateChanged,
)
from sim.cluster import SimCluster
from tests.helpers.fake_context import FakeContext, deliver

S0, S1, S2 = b"snapshot-0", b"snapshot-1", b"snapshot-2"


def actor(peers: tuple[str, ...] = ("n1", "n2", "n3"), **kw: object) -> tuple[CatalogSync, FakeContext]:
    ctx = FakeContext(Address("n1", CATALOG_SYNC))
    sync = CatalogSync(ctx, S0, peers=peers, **kw)  # type: ignore[arg-type]
    ctx.bind(sync)
    sync.started()
    return sync, ctx


def sent(ctx: FakeContext) -> list[tuple[str, str, Message]]:
    return [(s.to.node, s.to.name, s.msg) for s in ctx.take_sent()]


def push(snapshot: bytes) -> CatalogPush:
    return CatalogPush(snapshot, digest_of(snapshot))


def member(node_id: str) -> MemberUp:
    return MemberUp(MemberInfo(node_id, int(node_id[1:]), "127.0.0.1", 7000, "ws://x", 1))


def test_a_change_is_pushed_to_every_live_peer_once() -> None:
    sync, ctx = actor()
    deliver(sync, CatalogChanged(S1), Address("n1", "clients"))
    assert sent(ctx) == [("n2", CATALOG_SYNC, push(S1)), ("n3", CATALOG_SYNC, push(S1))]
    deliver(sync, CatalogChanged(S1), Address("n1", "clients"))  # same bytes: nothing new to say
    assert sent(ctx) == [] and sync.digest == digest_of(S1)


def test_digests_go_out_every_interval_from_a_random_first_offset() -> None:
    _, ctx = actor(interval=0.25)
    [first] = ctx.timers
    assert 0 <= first.due < 0.25 and first.msg == CatalogSyncTick()
    ctx.fire_next()
    assert sent(ctx) == [("n2", CATALOG_SYNC, CatalogDigest(digest_of(S0))), ("n3", CATALOG_SYNC,
                                                                             CatalogDigest(digest_of(S0)))]
    assert [t.due - first.due for t in ctx.timers] == [0.25]
    with pytest.raises(ValueError, match=r"catalog_sync\.interval"):
        actor(interval=0.0)


def test_a_digest_is_answered_with_our_push_only_when_it_differs() -> None:
    sync, ctx = actor()
    deliver(sync, CatalogDigest(digest_of(S0)), Address("n2", CATALOG_SYNC))
    assert sent(ctx) == []
    deliver(sync, CatalogDigest(digest_of(S1)), Address("n7", CATALOG_SYNC))  # answered even if unknown
    assert sent(ctx) == [("n7", CATALOG_SYNC, push(S0))]


def test_a_push_goes_to_the_hub_only_when_it_differs_and_checks() -> None:
    sync, ctx = actor(hub="hub")
    deliver(sync, push(S0))
    deliver(sync, CatalogPush(S1, digest_of(S2)))  # bytes and digest disagree: never merged
    assert sent(ctx) == [] and ctx.log.events("warning") == ["catalog_push_bad_digest"]
    deliver(sync, push(S1))
    assert sent(ctx) == [("n1", "hub", MergeCatalog(S1))]
    deliver(sync, push(S1))  # merged already against this same catalog of ours: it changed nothing
    assert sent(ctx) == []
    deliver(sync, CatalogChanged(S2), Address("n1", "hub"))
    ctx.take_sent()
    deliver(sync, push(S1))  # ours changed since: worth another merge
    assert sent(ctx) == [("n1", "hub", MergeCatalog(S1))]
    assert sync.stats["merges"] == 2 and sync.stats["bad_pushes"] == 1


def test_live_peers_follow_membership_and_peer_states() -> None:
    sync, ctx = actor(peers=())
    deliver(sync, member("n1"), Address("n1", "membership"))  # ourselves
    for peer in ("n2", "n3"):
        deliver(sync, member(peer), Address("n1", "membership"))
    assert sent(ctx) == [(p, CATALOG_SYNC, CatalogDigest(digest_of(S0))) for p in ("n2", "n3")]
    deliver(sync, member("n2"), Address("n1", "membership"))  # known already
    assert sent(ctx) == [] and sync.live == {"n2", "n3"}
    events: list[tuple[Message, set[str]]] = [
        (PeerStateChanged("n2", "healthy", "suspected", 1.0), {"n2", "n3"}),
        (PeerStateChanged("n2", "suspected", "down", 2.0), {"n3"}),
        (PeerStateChanged("n4", "joining", "healthy", 2.0), {"n3", "n4"}),
        (PeerStateChanged("n2", "down", "healthy", 3.0), {"n2", "n3", "n4"}),
        (MemberLeft("n3"), {"n2", "n4"}),
        (PeerStateChanged("n4", "healthy", "left", 4.0), {"n2"}),
    ]
    for event, live in events:
        deliver(sync, event, Address("n1", "heartbeat"))
        assert sync.live == live, event
    ctx.fire_next()
    deliver(sync, CatalogChanged(S1), Address("n1", "clients"))
    assert [(to, type(msg).__name__) for to, _, msg in sent(ctx)] == [("n2", "CatalogDigest"), ("n2", "CatalogPush")]


# ---- three simulated nodes

NODES = ["n1", "n2", "n3"]
CHEAP = KdfParams(n=2, r=1, p=1)
READ = frozenset({Permission.SERVICE_READ, Permission.VARIABLE_READ})


class MiniHub(Actor):
    """Stands in for the client hub: holds a catalog, merges `MergeCatalog`, announces changes."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.catalog = Catalog(kdf=CHEAP, entropy=ctx.rng.randbytes)
        self.keys = random.Random(ctx.address.node)

    def change(self, fn: Callable[[Catalog, float], object]) -> None:
        fn(self.catalog, self.ctx.now())
        self.ctx.publish(CatalogChanged(self.catalog.snapshot()))

    @handles(MergeCatalog)
    def on_merge(self, msg: MergeCatalog, env: Envelope) -> None:
        if self.catalog.merge_snapshot(msg.snapshot, now=self.ctx.now()):
            self.ctx.publish(CatalogChanged(self.catalog.snapshot()))


def build(node: Node) -> None:
    hub = MiniHub
    node.spawn("clients", hub)
    snapshot = hub_of(node).catalog.snapshot()
    node.spawn(CATALOG_SYNC, lambda ctx: CatalogSync(ctx, snapshot, peers=NODES))


def hub_of(node: Node) -> MiniHub:
    actor = node.actors["clients"]
    assert isinstance(actor, MiniHub)
    return actor


def hub(c: SimCluster, node_id: str) -> MiniHub:
    return hub_of(c.node(node_id))


def converged(c: SimCluster) -> bool:
    snapshots = {hub(c, n).catalog.snapshot() for n in NODES}
    digests = {c.node(n).actors[CATALOG_SYNC].digest for n in NODES}  # type: ignore[attr-defined]
    return len(snapshots) == 1 and digests == {digest_of(snapshots.pop())}


def test_a_change_at_one_node_reaches_the_others() -> None:
    c = SimCluster(3, NODES, build)
    c.run_for(0.1)
    assert converged(c)
    hub(c, "n1").change(lambda cat, now: cat.create_tenant("acme", now))
    assert c.run_until_condition(lambda: converged(c), 0.05)  # the push, not a digest round
    assert all(hub(c, n).catalog.has_tenant("acme") for n in NODES)
    assert all(c.node(n).stats.dead_letters == 0 for n in NODES)


def test_after_a_partition_heals_every_catalog_is_equal_within_a_second() -> None:
    c = SimCluster(4, NODES, build)
    n1, n2, n3 = (hub(c, n) for n in NODES)
    n1.change(lambda cat, now: cat.create_tenant("acme", now))
    n1.change(lambda cat, now: cat.grant("bob", "acme", READ, now))
    key: list[str] = []
    n1.change(lambda cat, now: key.append(cat.create_api_key("bob", server_admin=False, now=now,
                                                             entropy=n1.keys.randbytes)[0]))
    c.run_for(0.5)
    assert converged(c)
    c.partition(["n1"], ["n2", "n3"])
    n1.change(lambda cat, now: cat.revoke("bob", "acme", None, now))
    n1.change(lambda cat, now: cat.revoke_token("tok-1", now + 60, now))
    n1.change(lambda cat, now: cat.create_tenant("both", now))
    n2.change(lambda cat, now: cat.revoke_api_key(key[0], now))
    n2.change(lambda cat, now: cat.create_tenant("both", now))  # concurrently, the same name
    n3.change(lambda cat, now: cat.create_service("acme", "svc", now))
    c.run_for(2.0)
    assert not converged(c) and not n2.catalog.token_revoked("tok-1")
    c.heal()
    healed = c.now
    assert c.run_until_condition(lambda: converged(c), 1.0), "not equal 1 s after the heal"
    assert c.now - healed <= 1.0
    for h in (n1, n2, n3):
        cat = h.catalog
        assert cat.permissions("bob", "acme") == frozenset() and cat.token_revoked("tok-1")
        assert cat.api_keys("bob")[0].revoked and cat.services("acme") == ["svc"] and cat.has_tenant("both")
    c.run_for(2.0)  # and it stays quiet: equal digests, no more merges
    merges = sum(c.node(n).actors[CATALOG_SYNC].stats["merges"] for n in NODES)  # type: ignore[attr-defined]
    c.run_for(2.0)
    assert sum(c.node(n).actors[CATALOG_SYNC].stats["merges"] for n in NODES) == merges  # type: ignore[attr-defined]
