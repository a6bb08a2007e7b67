"""Replicators on a simulated 3-node cluster: concurrent writes, a partition, a crash with the disk
kept, and a service big enough to travel as a chunked snapshot. Every holder ends equal (values and
version vectors) within a few simulated seconds.

Each node runs a heartbeat monitor (static peers), a replicator, and a tiny "clients" actor that
stands for the hub: it writes stamped values into the node's store and tells the replicator
(`WritesMade`), and records the `RemoteWrites` it is told about. A node's `MemoryStore` lives in
the harness, outside the node, so a crash keeps its "disk".
"""

from __future__ import annotations

from typing import Any

import pytest

from commy.core.actor import Actor, Context, handles
from commy.core.heartbeat import HEARTBEAT, HeartbeatMonitor
from commy.core.hlc import HybridClock, make_stamp
from commy.core.node import Node
from commy.core.placement import rendezvous
from commy.core.replication import REPLICATOR, ReplicationConfig, Replicator
from commy.messages import (
    Address,
    ClockSynced,
    EnsureService,
    Envelope,
    MemberUp,
    RemoteWrites,
    ServiceReady,
    VariableChanged,
    WriteRecord,
    WritesMade,
)
from commy.store.memory import MemoryStore
from sim.cluster import SimCluster
from tests.helpers.replicas import member

T, S = "acme", "svc"
NODES = ("n1", "n2", "n3")
INDEX = {n: i for i, n in enumerate(NODES, 1)}


class Clients(Actor):
    """Stands for the hub: writes through the node's clock and store, records remote writes."""

    def __init__(self, ctx: Context, store: MemoryStore, clock: HybridClock) -> None:
        super().__init__(ctx)
        self.store, self.clock = store, clock
        self.remote: list[VariableChanged] = []
        self.ready: list[ServiceReady] = []
        self.synced: list[ClockSynced] = []

    @handles(RemoteWrites)
    def _remote(self, msg: RemoteWrites, env: Envelope) -> None:
        self.remote.extend(msg.changes)

    @handles(ServiceReady)
    def _ready(self, msg: ServiceReady, env: Envelope) -> None:
        self.ready.append(msg)

    @handles(ClockSynced)
    def _synced(self, msg: ClockSynced, env: Envelope) -> None:
        self.synced.append(msg)

    def ensure(self) -> None:
        self.ctx.send(Address(self.ctx.address.node, REPLICATOR), EnsureService(T, S))

    def write(self, **values: bytes) -> None:
        handle = self.store.open(T, S, create=True)
        records = []
        for name, value in values.items():
            stamp = self.clock.tick()
            handle.write(name, value, stamp=stamp)
            records.append(WriteRecord(name, value, stamp, 0, f"client@{self.ctx.address.node}"))
        made = WritesMade(T, S, tuple(records), "local", "", 0, None)
        self.ctx.send(Address(self.ctx.address.node, REPLICATOR), made)


class Harness:
    def __init__(self, seed: int, **config: Any) -> None:
        self.stores = {n: MemoryStore() for n in NODES}  # the nodes' disks: they outlive crashes
        self.config = ReplicationConfig(cluster_size=len(NODES), **config)
        self.cluster = SimCluster(seed, NODES, self.build)

    def build(self, node: Node) -> None:
        me, store = node.node_id, self.stores[node.node_id]
        clock = HybridClock(INDEX[me], node.host.now)
        node.spawn(HEARTBEAT, lambda ctx: HeartbeatMonitor(ctx, list(NODES)))
        node.spawn(REPLICATOR, lambda ctx: Replicator(ctx, store=store, clock=clock, me=member(me, INDEX[me]),
                                                      config=self.config))
        node.spawn("clients", lambda ctx: Clients(ctx, store, clock))
        for other in NODES:
            if other != me:
                node.publish(MemberUp(member(other, INDEX[other])))

    def clients(self, node: str) -> Clients:
        return self.cluster.node(node).actors["clients"]  # type: ignore[return-value]

    def replicator(self, node: str) -> Replicator:
        return self.cluster.node(node).actors[REPLICATOR]  # type: ignore[return-value]

    def view(self, node: str) -> tuple[dict[str, tuple[bytes, int]], dict[int, int]] | None:
        store = self.stores[node]
        if not store.exists(T, S):
            return None
        h = store.open(T, S)
        return {e.name: (e.value, e.stamp) for e in h.entries()}, h.clocks()

    def converged(self, holders: tuple[str, ...] = NODES) -> bool:
        views = [self.view(n) for n in holders]
        return views[0] is not None and all(v == views[0] for v in views)

    def settle(self, timeout: float = 5.0, holders: tuple[str, ...] = NODES) -> float:
        """Run until every holder is equal; returns how long that took (simulated seconds)."""
        start = self.cluster.now
        assert self.cluster.run_until_condition(lambda: self.converged(holders), timeout), self.explain(holders)
        return self.cluster.now - start

    def explain(self, holders: tuple[str, ...]) -> str:
        return "\n".join(f"{n}: {self.view(n)}" for n in holders)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_concurrent_writes_and_a_partition_converge_after_heal(seed: int) -> None:
    h = Harness(seed)
    c = h.cluster
    c.run_for(1.0)  # heartbeats: everyone live
    h.clients("n1").write(x=b"from n1", a=b"1")
    h.clients("n2").write(x=b"from n2", b=b"2")  # same instant: concurrent with n1's x
    h.clients("n3").write(c=b"3")
    h.settle(3.0)
    assert sum(h.replicator(n).stats["conflicts"] for n in NODES) >= 1
    x = h.view("n1")[0]["x"]  # type: ignore[index]
    assert x[0] == b"from n2"  # lww: same millisecond, the higher origin index wins

    c.partition(["n3"])
    c.run_for(2.5)  # n3 is DOWN on both sides
    h.clients("n3").write(x=b"n3 alone", c=b"33")
    c.run_for(0.1)
    h.clients("n1").write(x=b"n1 majority", a=b"11")
    c.run_for(0.4)
    assert h.converged(("n1", "n2")) and not h.converged()
    c.heal()
    assert h.settle(5.0) < 4.0
    values = {k: v for k, (v, _) in h.view("n1")[0].items()}  # type: ignore[index]
    assert values == {"x": b"n1 majority", "a": b"11", "b": b"2", "c": b"33"}  # n1 wrote x after n3 did
    assert h.view("n1")[1] == {i: max(h.stores[n].open(T, S).clocks()[i] for n in NODES) for i in (1, 2, 3)}  # type: ignore[index]
    assert any(ch.name == "c" and ch.value == b"33" for ch in h.clients("n1").remote)
    assert all(c.node(n).stats.dead_letters == 0 for n in NODES)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_restarted_node_catches_up_through_anti_entropy(seed: int) -> None:
    h = Harness(seed)
    c = h.cluster
    c.run_for(1.0)
    h.clients("n3").write(mine=b"before")
    h.clients("n1").write(x=b"1")
    h.settle(3.0)
    c.crash("n3")
    c.run_for(0.5)
    h.clients("n1").write(x=b"2", y=b"2")
    h.clients("n2").write(z=b"2")
    c.run_for(1.0)
    assert h.view("n3")[0]["mine"][0] == b"before"  # type: ignore[index]  # the disk survived
    c.restart("n3")
    h.settle(4.0)
    assert {k for k in h.view("n3")[0]} == {"mine", "x", "y", "z"}  # type: ignore[index]
    h.clients("n3").write(mine=b"after")  # its stamps go on above what its disk holds
    h.settle(3.0)
    assert h.view("n1")[0]["mine"][0] == b"after"  # type: ignore[index]


def test_a_node_back_from_a_lost_disk_with_its_clock_behind_stamps_above_its_old_writes_once_synced() -> None:
    h = Harness(6, replication_factor=3)
    c = h.cluster
    c.run_for(1.0)
    c.jump_clock("n3", 5.0)  # n3 runs 5 s ahead for a while: its stamps too
    h.clients("n3").write(x=b"old", y=b"old")
    h.settle(3.0)
    old = h.stores["n1"].open(T, S).clocks()[INDEX["n3"]]
    c.crash("n3")
    h.stores["n3"] = MemoryStore()  # the disk is lost ...
    c.jump_clock("n3", -5.0)  # ... and the clock is right again: 5 s behind the stamps n3 issued
    c.restart("n3")
    assert h.replicator("n3").clock.last < old and not h.clients("n3").synced  # a stamp now would sort below
    assert c.run_until_condition(lambda: bool(h.clients("n3").synced), 2.0)
    assert h.clients("n3").synced[0].complete and h.replicator("n3").clock.last >= old
    h.clients("n3").write(x=b"new")  # a hub writes only once synced: the stamp sorts after n3's old ones
    h.settle(3.0)
    assert h.view("n1")[0]["x"][0] == b"new"  # type: ignore[index]  # not dropped as a "duplicate"


def test_a_node_that_is_no_replica_fetches_the_service_when_a_client_asks() -> None:
    h = Harness(4, replication_factor=1)
    c = h.cluster
    [owner] = rendezvous(T, S, NODES, 1)
    other = next(n for n in NODES if n != owner)
    c.run_for(1.0)
    h.clients(owner).write(x=b"1", y=b"2")
    c.run_for(2.0)
    assert h.view(other) is None  # not a replica: nothing pulled it there
    h.clients(other).ensure()
    c.run_for(0.5)
    assert h.clients(other).ready == [ServiceReady(T, S, True)] and h.converged((owner, other))


def big_service(store: MemoryStore, megabytes: int) -> None:
    handle = store.open(T, S, create=True)
    stamp = 0
    for i in range(megabytes * 8):
        stamp = make_stamp(1_000_000_000 + i, 0, INDEX["n1"])
        handle.write(f"blob{i}", bytes([i % 251]) * (128 << 10), stamp=stamp)
    handle.set_clock(INDEX["n1"], stamp)


@pytest.mark.parametrize(("seed", "loss"), [(1, 0.0), (3, 0.05)])
def test_a_big_service_travels_as_a_chunked_snapshot(seed: int, loss: float) -> None:
    h = Harness(seed, replication_factor=3)
    big_service(h.stores["n1"], megabytes=4)
    h.cluster.configure(loss=loss)
    h.settle(8.0)
    stats = [h.replicator(n).stats for n in ("n2", "n3")]
    assert all(s["transfers"] == 1 and s["bad_chunks"] == 0 for s in stats), stats
    assert (sum(s["transfer_resumes"] for s in stats) > 0) == (loss > 0), stats  # lost chunks: resumed
    assert len(h.view("n2")[0]) == 32  # type: ignore[index]


def test_a_run_replays_exactly_from_its_seed() -> None:
    def run() -> str:
        h = Harness(5)
        h.cluster.run_for(1.0)
        h.clients("n1").write(x=b"1")
        h.clients("n2").write(x=b"2")
        h.cluster.partition(["n1"])
        h.cluster.run_for(2.0)
        h.clients("n1").write(y=b"1")
        h.cluster.heal()
        h.settle()
        return h.cluster.trace.hash

    assert run() == run()
