"""A running node's vital signs, read on its loop: clients, services, replication lag, peer views.

`snapshot(srv)` reads the gateway, the store and the node's actors as they are at that instant, so
it must run on the node's own loop (another thread uses `asyncio.run_coroutine_threadsafe`). The
lag is the p99 of the last `LAG_WINDOW` remote writes applied here, from the write's stamp to its
apply (it includes any clock skew between the two nodes); -1 when none arrived.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

from commy.core.heartbeat import HEARTBEAT, HeartbeatMonitor
from commy.core.replica_state import REPLICATOR
from commy.core.replication import Replicator

if TYPE_CHECKING:
    from commy.runtime.server import RunningServer

LAG_WINDOW = 1_000


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    node_id: str
    clients: int
    services: int
    lag_p99_ms: float
    peers: tuple[tuple[str, str], ...]  # (peer id, "healthy" / "suspected" / "down" / ...), by id


def snapshot(srv: RunningServer) -> NodeSnapshot:
    actors = srv.node.actors
    monitor, replicator = actors.get(HEARTBEAT), actors.get(REPLICATOR)
    peers: tuple[tuple[str, str], ...] = ()
    if isinstance(monitor, HeartbeatMonitor):
        peers = tuple(sorted((p, v.state.value) for p, v in monitor.table.views.items()))
    lag = -1.0
    if isinstance(replicator, Replicator) and replicator.lag_samples:
        samples = replicator.lag_samples
        recent = sorted(islice(samples, max(0, len(samples) - LAG_WINDOW), None))
        lag = round(max(0.0, recent[min(len(recent) - 1, int(len(recent) * 0.99))]) * 1000, 2)
    services = sum(1 for t in srv.store.tenants() for _ in srv.store.services(t))
    return NodeSnapshot(srv.node.node_id, len(srv.gateway.conns), services, lag, peers)
