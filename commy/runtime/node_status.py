"""A running node's vital signs, read on its loop: health, clients, services, replication lag, peers.

Everything here reads the gateway, the catalog and the node's actors as they are at that instant,
so it must run on the node's own loop (another thread uses `asyncio.run_coroutine_threadsafe`).
What the store holds comes from a `HeldServices` (read from disk at most once a second); the HTTP
endpoints also keep the `/status` document they built for a second (`http_endpoints`).

- `snapshot(srv)`: the few numbers `commy status` shows per node (`NodeSnapshot`).
- `health(srv)`: "serving", or why not -- "joining" while the replicator's clock catches up with
  the peers after a start (writes are refused meanwhile), "draining" once a drain began,
  "stopping" once the gateway closes.
- `status_document(srv, held)`: the JSON `/status` serves -- the membership as this node sees it (each
  member with its state and last round trip), the tenants, every service of the catalog with the
  nodes that hold it, its rendezvous replicas and the lag of the writes that reach this node for
  it, and the connected clients with their sessions. It names tenants, services, clients and
  nodes, never a key, token, session id or file path. Each list is cut at `MAX_ROWS` rows:
  `totals` gives the full count of each and `truncated` says which were cut;
  `unreadable_tenants` counts the tenants whose store index could not be read (`HeldServices`).
  Building it asks the catalog for each tenant's services once and walks the subscription index
  once (not once per connection), but is still O(tenants x services) in the catalog's own
  `services(tenant)`: hence the endpoints' one-second cache.

The node-wide lag is the p99 of the last `LAG_WINDOW` remote writes applied here, from the write's
stamp to its apply (it includes any clock skew between the two nodes); -1 when none arrived.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

from commy.core.clients import CLIENTS, ClientHub
from commy.core.drain_ops import DrainState
from commy.core.heartbeat import HEARTBEAT, HeartbeatMonitor
from commy.core.members import MEMBERSHIP, Membership
from commy.core.placement import rendezvous
from commy.core.replica_state import REPLICATOR
from commy.core.replication import Replicator
from commy.runtime.store_view import HeldServices
from commy.runtime.wire_meter import p99

if TYPE_CHECKING:
    from commy.runtime.server import RunningServer

LAG_WINDOW = 1_000
MAX_ROWS = 500
SERVING, JOINING, DRAINING, STOPPING = "serving", "joining", "draining", "stopping"


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    node_id: str
    clients: int
    services: int
    lag_p99_ms: float
    peers: tuple[tuple[str, str], ...]  # (peer id, "healthy" / "suspected" / "down" / ...), by id


def _actor(srv: RunningServer, name: str, kind: type[Any]) -> Any:
    actor = srv.node.actors.get(name)
    return actor if isinstance(actor, kind) else None


def lag_p99_ms(replicator: Replicator | None) -> float:
    """The node-wide replication lag in ms (see the module docstring); -1 without samples."""
    if replicator is None or not replicator.lag_samples:
        return -1.0
    samples = replicator.lag_samples
    recent = list(islice(samples, max(0, len(samples) - LAG_WINDOW), None))
    return round(max(0.0, p99(recent)) * 1000, 2)


def snapshot(srv: RunningServer, held: HeldServices | None = None) -> NodeSnapshot:
    monitor: HeartbeatMonitor | None = _actor(srv, HEARTBEAT, HeartbeatMonitor)
    peers: tuple[tuple[str, str], ...] = ()
    if monitor is not None:
        peers = tuple(sorted((p, v.state.value) for p, v in monitor.table.views.items()))
    services = len((held or HeldServices(srv)).get())
    return NodeSnapshot(srv.node.node_id, len(srv.gateway.conns), services,
                        lag_p99_ms(_actor(srv, REPLICATOR, Replicator)), peers)


def health(srv: RunningServer) -> str:
    """SERVING, JOINING, DRAINING or STOPPING (see the module docstring)."""
    if srv.node.stopped or srv.closing:
        return STOPPING
    hub: ClientHub | None = _actor(srv, CLIENTS, ClientHub)
    if hub is None:
        return STOPPING
    if hub.drain_state is not DrainState.SERVING:
        return DRAINING
    replicator: Replicator | None = _actor(srv, REPLICATOR, Replicator)
    if hub.catching_up_since is not None or (replicator is not None and replicator.catching_up_since is not None):
        return JOINING
    return SERVING


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def membership(srv: RunningServer) -> list[dict[str, Any]]:
    """This node first, then every peer it knows of, by id: state, round trip, index, incarnation."""
    me = srv.node.node_id
    monitor: HeartbeatMonitor | None = _actor(srv, HEARTBEAT, HeartbeatMonitor)
    members: Membership | None = _actor(srv, MEMBERSHIP, Membership)
    known = dict(members.members) if members is not None else {}
    rows: list[dict[str, Any]] = [{
        "node": me, "self": True, "state": health(srv), "url": srv.gateway.url,
        "index": members.me.index if members is not None else None,
        "incarnation": members.me.incarnation if members is not None else None,
        "rtt_ms": None, "since": None,
    }]
    views = monitor.table.views if monitor is not None else {}
    for peer in sorted(set(views) | set(known)):
        view, info = views.get(peer), known.get(peer)
        left = members is not None and peer in members.left and info is None
        rows.append({
            "node": peer, "self": False,
            "state": view.state.value if view is not None else ("left" if left else "joining"),
            "url": info.client_url if info is not None else None,
            "index": info.index if info is not None else None,
            "incarnation": info.incarnation if info is not None else None,
            "rtt_ms": _ms(view.rtt) if view is not None else None,
            "since": round(view.changed_at, 3) if view is not None and view.changed_at else None,
        })
    return rows


def services(srv: RunningServer, states: dict[str, str], catalog: dict[str, list[str]],
             held: frozenset[tuple[str, str]]) -> list[dict[str, Any]]:
    """The first `MAX_ROWS` services of `catalog` (tenant -> its services): who holds each, who
    should, and the lag of its writes here."""
    me = srv.node.node_id
    replicator: Replicator | None = _actor(srv, REPLICATOR, Replicator)
    factor = replicator.config.replication_factor if replicator is not None else 1
    live = [n for n, s in states.items() if s in ("healthy", "suspected")]
    wire = srv.peer_wire
    rows: list[dict[str, Any]] = []
    for tenant, names in catalog.items():
        for service in names:
            if len(rows) >= MAX_ROWS:
                return rows
            key = (tenant, service)
            holders = {me} if key in held else set()
            if replicator is not None:
                holders |= {peer for peer, keys in replicator.holdings.items() if key in keys}
            lag = wire.lag_p99(tenant, service) if wire is not None else None
            rows.append({"tenant": tenant, "service": service, "holders": sorted(holders),
                         "replicas": rendezvous(tenant, service, [me, *live], factor), "lag_ms": _ms(lag)})
    return rows


def clients(srv: RunningServer) -> list[dict[str, Any]]:
    """The first `MAX_ROWS` connected clients: where from, for how long, and their sessions (never a
    credential)."""
    hub: ClientHub | None = _actor(srv, CLIENTS, ClientHub)
    if hub is None:
        return []
    now = srv.host.now()
    subscribed = hub.subs.names_by_conn()  # one walk of the index, not one per connection
    rows: list[dict[str, Any]] = []
    for conn in islice(hub.conns.values(), MAX_ROWS):
        rows.append({
            "conn": conn.conn_id, "peer": conn.peer, "local": conn.local,
            "connected_s": round(max(0.0, now - conn.opened_at), 1),
            "sessions": [{"tenant": t, "client": s.client_id, "state": s.state.value}
                         for t, s in sorted(conn.sessions.items())],
            "mapped": [f"{t}/{s}" for t, s in sorted(conn.mapped)],
            "subscriptions": subscribed.get(conn.conn_id, 0),
        })
    return rows


def sessions_per_tenant(srv: RunningServer) -> dict[str, int]:
    """Open sessions on each tenant (a client on several tenants counts once for each)."""
    hub: ClientHub | None = _actor(srv, CLIENTS, ClientHub)
    counts: dict[str, int] = {}
    for conn in hub.conns.values() if hub is not None else ():
        for tenant, session in conn.sessions.items():
            if session.open:
                counts[tenant] = counts.get(tenant, 0) + 1
    return counts


def status_document(srv: RunningServer, held: HeldServices) -> dict[str, Any]:
    """What `/status` answers (see the module docstring)."""
    members = membership(srv)
    states = {row["node"]: row["state"] for row in members if not row["self"]}
    per_tenant = sessions_per_tenant(srv)
    names = srv.catalog.tenants()
    catalog = {t: srv.catalog.services(t) for t in names}  # each tenant asked once: it walks every service
    tenants = [{"tenant": t, "services": len(catalog[t]), "sessions": per_tenant.get(t, 0)} for t in names[:MAX_ROWS]]
    service_rows = services(srv, states, catalog, held.get())
    client_rows = clients(srv)
    hub: ClientHub | None = _actor(srv, CLIENTS, ClientHub)
    totals = {"tenants": len(names), "services": sum(len(v) for v in catalog.values()),
              "clients": len(hub.conns) if hub is not None else 0}
    return {
        "node": srv.node.node_id,
        "state": health(srv),
        "time": round(srv.host.now(), 3),
        "uptime_s": round(max(0.0, srv.host.now() - srv.started_at), 1),
        "replication_lag_p99_ms": lag_p99_ms(_actor(srv, REPLICATOR, Replicator)),
        "membership": members,
        "tenants": tenants,
        "services": service_rows,
        "clients": client_rows,
        "client_count": totals["clients"],
        "totals": totals,
        "truncated": {"tenants": len(tenants) < totals["tenants"], "services": len(service_rows) < totals["services"],
                      "clients": len(client_rows) < totals["clients"]},
        "unreadable_tenants": len(held.unreadable),
    }
