"""Replicators on fake contexts: one alone (`solo`), or a few wired together (`Mesh`).

`solo` builds one `Replicator` on a `FakeContext` and a `MemoryStore`, with the given peers known
and live. `Mesh` builds several and carries what they send each other, in order, on demand
(`pump`), through an optional `tamper(sent) -> message | None` that may change or drop a message;
what goes anywhere else (the hub, clients, unknown nodes) is kept in `outbox`. `advance(dt)` moves
every replica's clock and fires its due timers. No simulator, no real time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from commy.core.hlc import HybridClock, make_stamp
from commy.core.replication import REPLICATOR, ReplicationConfig, Replicator
from commy.messages import Address, MemberInfo, MemberUp, Message, PeerStateChanged, WriteRecord
from commy.store.memory import MemoryStore
from tests.helpers.fake_context import FakeContext, Sent, deliver

T, S = "acme", "svc"


def member(node: str, index: int) -> MemberInfo:
    return MemberInfo(node, index, "127.0.0.1", 7000 + index, f"ws://127.0.0.1:{8000 + index}", 1)


def stamp(ms: int, origin: int, logical: int = 0) -> int:
    return make_stamp(1_700_000_000_000 + ms, logical, origin)


def rec(name: str, value: bytes, st: int, prev: int = 0, writer: str = "") -> WriteRecord:
    return WriteRecord(name, value, st, prev, writer)


def config(**kw: Any) -> ReplicationConfig:
    kw.setdefault("anti_entropy_interval", 1000.0)  # digests only when a test fires them
    return ReplicationConfig(**kw)


def solo(node: str = "n1", index: int = 1, peers: Iterable[tuple[str, int]] = (("n2", 2), ("n3", 3)),
         *, store: MemoryStore | None = None, merge: Callable[[bytes, bytes], bytes] | None = None,
         live: bool = True, exists: Callable[[str, str], bool] | None = None,
         **kw: Any) -> tuple[Replicator, FakeContext, MemoryStore]:
    ctx = FakeContext(Address(node, REPLICATOR), now=1_700_000_000.0)
    store = store if store is not None else MemoryStore()
    rep = Replicator(ctx, store=store, clock=HybridClock(index, ctx.now), me=member(node, index),
                     config=config(**kw), merge=merge, exists=exists)
    ctx.bind(rep)
    rep.started()
    for peer, i in peers:
        deliver(rep, MemberUp(member(peer, i)), Address(node, "membership"))
        if live:
            deliver(rep, PeerStateChanged(peer, "joining", "healthy", 0.0), Address(node, "heartbeat"))
    ctx.take_sent()
    return rep, ctx, store


def sent_of(ctx: FakeContext, tp: type[Message]) -> list[Sent]:
    return [s for s in ctx.sent if isinstance(s.msg, tp)]


@dataclass
class Mesh:
    """Replicators n1..nN (indexes 1..N) that all know each other and see each other live."""

    n: int = 2
    merge: Callable[[bytes, bytes], bytes] | None = None
    kw: dict[str, Any] = field(default_factory=dict)
    reps: dict[str, Replicator] = field(default_factory=dict)
    ctxs: dict[str, FakeContext] = field(default_factory=dict)
    stores: dict[str, MemoryStore] = field(default_factory=dict)
    outbox: list[tuple[str, Sent]] = field(default_factory=list)
    carried: list[tuple[str, Sent]] = field(default_factory=list)

    def __post_init__(self) -> None:
        nodes = [(f"n{i}", i) for i in range(1, self.n + 1)]
        for node, index in nodes:
            peers = [p for p in nodes if p[0] != node]
            self.reps[node], self.ctxs[node], self.stores[node] = solo(node, index, peers, merge=self.merge,
                                                                       **self.kw)

    def pump(self, tamper: Callable[[str, Sent], Message | None] | None = None, limit: int = 10_000) -> int:
        """Carry messages between replicas until none are left; returns how many were carried."""
        count = 0
        while count < limit:
            batch = [(node, s) for node, ctx in self.ctxs.items() for s in ctx.take_sent()]
            if not batch:
                return count
            for node, s in batch:
                target = self.reps.get(s.to.node)
                if target is None or s.to.name != REPLICATOR:
                    self.outbox.append((node, s))
                    continue
                msg = tamper(node, s) if tamper is not None else s.msg
                self.carried.append((node, s))
                count += 1
                if msg is not None:
                    deliver(target, msg, Address(node, REPLICATOR), msg_id=s.msg_id, request_id=s.request_id)
        raise AssertionError("messages keep flowing")

    def advance(self, dt: float, tamper: Callable[[str, Sent], Message | None] | None = None) -> None:
        for ctx in self.ctxs.values():
            ctx.advance(dt)
        self.pump(tamper)

    def view(self, node: str) -> tuple[dict[str, tuple[bytes, int]], dict[int, int]]:
        """What `node` holds of the service: name -> (value, stamp), and its version vector."""
        store = self.stores[node]
        if not store.exists(T, S):
            return {}, {}
        h = store.open(T, S)
        return {e.name: (e.value, e.stamp) for e in h.entries()}, h.clocks()
