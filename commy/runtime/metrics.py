"""The node's metrics in the Prometheus text format, read from the actors' own counters at each scrape.

Nothing is counted twice: the counters live where the work happens (the gateway's `stats` for the
client protocol, the peer codec's `WireCounts` for the peer protocol, the hub's and replicator's
`stats`, the heartbeat monitor's round-trip histograms, the failover manager's outcomes, the node's
dead letters, and `EventCounts` for the log events such as honeypot alerts), and `NodeCollector`
turns them into metric families when Prometheus asks -- on the node's loop, where the actors run,
so every figure of one scrape is from the same instant. Each server has its own registry, so
several servers in one process (tests, benchmarks) do not mix their figures.

`METRICS` lists every family with its type, labels and meaning; the README's table is made from
it and a test checks that a scrape shows exactly these families.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

import commy
from commy.core.clients import CLIENTS, ClientHub
from commy.core.failover import FAILOVER, FailoverManager
from commy.core.heartbeat import HEARTBEAT, HeartbeatMonitor
from commy.core.membership import PeerState
from commy.core.replica_state import REPLICATOR, STAT_NAMES
from commy.core.replication import Replicator
from commy.runtime.node_status import DRAINING, JOINING, SERVING, STOPPING, health, lag_p99_ms, sessions_per_tenant
from commy.runtime.store_view import HeldServices

if TYPE_CHECKING:
    from commy.runtime.server import RunningServer

__all__ = ["CONTENT_TYPE", "METRICS", "NodeCollector", "metrics_registry", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NODE_STATES = (SERVING, JOINING, DRAINING, STOPPING)

# name (as exposed): (type, labels, help)
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "commy_node_info": ("gauge", ("node", "version"), "Always 1; the node's id and commy's version"),
    "commy_node_state": ("gauge", ("state",), "1 for the node's state (serving, joining, draining, stopping)"),
    "commy_uptime_seconds": ("gauge", (), "Seconds since the node started"),
    "commy_clients_connected": ("gauge", (), "Client connections open now"),
    "commy_sessions": ("gauge", ("tenant",), "Open client sessions per tenant"),
    "commy_tenants": ("gauge", (), "Tenants in the catalog"),
    "commy_services_held": ("gauge", (), "Service files this node holds"),
    "commy_tenant_indexes_unreadable": ("gauge", (), "Tenants whose store index this node cannot read (logged once)"),
    "commy_messages_received_total": ("counter", ("protocol",), "Messages received, by protocol (client, peer)"),
    "commy_messages_sent_total": ("counter", ("protocol",), "Messages sent, by protocol (client, peer)"),
    "commy_bytes_received_total": ("counter", ("protocol",), "Bytes received, by protocol (client: message payloads, "
                                   "no WebSocket framing, before compression; peer: frames with their 4-byte length)"),
    "commy_bytes_sent_total": ("counter", ("protocol",), "Bytes sent, by protocol (client: message payloads, "
                               "no WebSocket framing, before compression; peer: frames with their 4-byte length)"),
    "commy_errors_sent_total": ("counter", ("protocol", "code"), "Error messages sent, by protocol and code"),
    "commy_errors_received_total": ("counter", ("protocol", "code"), "Error messages received from peers, by code"),
    "commy_client_requests_total": ("counter", (), "Client requests served"),
    "commy_clients_accepted_total": ("counter", (), "Client connections accepted"),
    "commy_clients_refused_total": ("counter", (), "Client connections refused (too many, or closing)"),
    "commy_clients_stalled_total": ("counter", (), "Clients dropped for not reading their messages"),
    "commy_clients_dropped_total": ("counter", (), "Clients dropped by the server (bad requests, silence)"),
    "commy_peer_state": ("gauge", ("peer", "state"), "1 for each peer's state as this node sees it"),
    "commy_peer_state_changes_total": ("counter", (), "Peer state changes this node saw"),
    "commy_node_failures_total": ("counter", (), "Peers this node saw go DOWN"),
    "commy_heartbeat_rtt_seconds": ("histogram", ("peer",), "Heartbeat round trips per peer"),
    "commy_replication_lag_p99_seconds": ("gauge", (), "p99 of the last 1000 remote writes: stamp to apply here"),
    "commy_replication_conflicts_total": ("counter", (), "Concurrent writes to one variable resolved here"),
    "commy_replication_operations_total": ("counter", ("operation",), "Replicator work by kind (applied, syncs, ...)"),
    "commy_migrations_total": ("counter", ("outcome",), "Client migrations recorded, by outcome"),
    "commy_sessions_revoked_total": ("counter", (), "Sessions ended because their access was revoked"),
    "commy_file_rotations_total": ("counter", (), "Service files rotated after a revocation"),
    "commy_honeypot_alerts_total": ("counter", (), "Rotated-away files (honeypots) found touched"),
    "commy_log_records_total": ("counter", ("level",), "Log records by level, whatever the log level shown"),
    "commy_dead_letters_total": ("counter", (), "Messages no actor handled"),
    "commy_handler_errors_total": ("counter", (), "Actor handlers that raised"),
}


class NodeCollector(Collector):
    """Builds every family of `METRICS` from a running server's counters (see the module docstring)."""

    def __init__(self, srv: RunningServer, held: HeldServices | None = None) -> None:
        self.srv = srv
        self.held = held or HeldServices(srv)

    def _family(self, name: str) -> Any:
        kind, labels, text = METRICS[name]
        cls = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily, "histogram": HistogramMetricFamily}[kind]
        return cls(name, text, labels=list(labels))

    def _single(self, name: str, value: float) -> Metric:
        family = self._family(name)
        family.add_metric([], value)
        return family

    def collect(self) -> Iterator[Metric]:
        srv = self.srv
        actors = srv.node.actors
        hub, replicator = actors.get(CLIENTS), actors.get(REPLICATOR)
        hub = hub if isinstance(hub, ClientHub) else None
        replicator = replicator if isinstance(replicator, Replicator) else None
        events = srv.events.events if srv.events is not None else {}

        info = self._family("commy_node_info")
        info.add_metric([srv.node.node_id, commy.__version__], 1)
        yield info
        state, now = self._family("commy_node_state"), health(srv)
        for name in NODE_STATES:
            state.add_metric([name], 1 if name == now else 0)
        yield state
        yield self._single("commy_uptime_seconds", max(0.0, srv.host.now() - srv.started_at))
        yield self._single("commy_clients_connected", len(srv.gateway.conns))
        sessions = self._family("commy_sessions")
        for tenant, n in sorted(sessions_per_tenant(srv).items()):
            sessions.add_metric([tenant], n)
        yield sessions
        yield self._single("commy_tenants", len(srv.catalog.tenants()))
        yield self._single("commy_services_held", len(self.held.get()))
        yield self._single("commy_tenant_indexes_unreadable", len(self.held.unreadable))
        yield from self._wire()
        gw = srv.gateway.stats
        yield self._single("commy_client_requests_total", hub.stats["requests"] if hub is not None else 0)
        yield self._single("commy_clients_accepted_total", gw.accepted)
        yield self._single("commy_clients_refused_total", gw.refused)
        yield self._single("commy_clients_stalled_total", gw.stalled)
        yield self._single("commy_clients_dropped_total", hub.stats["dropped"] if hub is not None else 0)
        yield from self._peers()
        yield self._single("commy_peer_state_changes_total", events.get("peer_state", 0))
        yield self._single("commy_node_failures_total", events.get("node_failed", 0))
        lag = self._family("commy_replication_lag_p99_seconds")
        lag_ms = lag_p99_ms(replicator)
        if lag_ms >= 0:
            lag.add_metric([], lag_ms / 1000)
        yield lag
        stats = replicator.stats if replicator is not None else dict.fromkeys(STAT_NAMES, 0)
        yield self._single("commy_replication_conflicts_total", stats["conflicts"])
        operations = self._family("commy_replication_operations_total")
        for name in STAT_NAMES:
            if name != "conflicts":
                operations.add_metric([name], stats[name])
        yield operations
        migrations = self._family("commy_migrations_total")
        failover = actors.get(FAILOVER)
        if isinstance(failover, FailoverManager):
            for outcome, n in sorted(failover.outcomes.items()):
                migrations.add_metric([outcome], n)
        yield migrations
        yield self._single("commy_sessions_revoked_total", events.get("session_revoked", 0))
        yield self._single("commy_file_rotations_total", hub.stats["rotations"] if hub is not None else 0)
        yield self._single("commy_honeypot_alerts_total", events.get("honeypot_touched", 0))
        records = self._family("commy_log_records_total")
        for level, n in sorted((srv.events.levels if srv.events is not None else {}).items()):
            records.add_metric([level], n)
        yield records
        yield self._single("commy_dead_letters_total", srv.node.stats.dead_letters)
        yield self._single("commy_handler_errors_total", srv.node.stats.handler_errors)

    def _wire(self) -> Iterator[Metric]:
        gw = self.srv.gateway.stats
        wire = self.srv.peer_wire.counts if self.srv.peer_wire is not None else None
        for name, client, peer in (
            ("commy_messages_received_total", gw.messages_in, wire and wire.messages_in),
            ("commy_messages_sent_total", gw.messages_out, wire and wire.messages_out),
            ("commy_bytes_received_total", gw.bytes_in, wire and wire.bytes_in),
            ("commy_bytes_sent_total", gw.bytes_out, wire and wire.bytes_out),
        ):
            family = self._family(name)
            family.add_metric(["client"], client)
            if wire is not None:
                family.add_metric(["peer"], peer or 0)
            yield family
        sent = self._family("commy_errors_sent_total")
        for code, n in sorted(gw.errors.items()):
            sent.add_metric(["client", code], n)
        received = self._family("commy_errors_received_total")
        if wire is not None:
            for code, n in sorted(wire.errors_out.items()):
                sent.add_metric(["peer", code], n)
            for code, n in sorted(wire.errors_in.items()):
                received.add_metric(["peer", code], n)
        yield sent
        yield received

    def _peers(self) -> Iterator[Metric]:
        monitor = self.srv.node.actors.get(HEARTBEAT)
        states, rtt = self._family("commy_peer_state"), self._family("commy_heartbeat_rtt_seconds")
        if isinstance(monitor, HeartbeatMonitor):
            for peer, view in sorted(monitor.table.views.items()):
                for state in PeerState:
                    states.add_metric([peer, state.value], 1 if view.state is state else 0)
            for peer, hist in sorted(monitor.rtts.items()):
                buckets = [(_le(bound), n) for bound, n in hist.cumulative()] + [("+Inf", hist.count)]
                rtt.add_metric([peer], buckets, hist.total)
        yield states
        yield rtt


def _le(bound: float) -> str:
    return repr(float(bound))


def metrics_registry(srv: RunningServer, held: HeldServices | None = None) -> CollectorRegistry:
    """A registry of its own for `srv` (the process-wide default one is not used); `held` may be
    shared with `/status` so that both read the store at most once a second between them."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(srv, held))
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    """One scrape, in the Prometheus text format (`CONTENT_TYPE`)."""
    return generate_latest(registry)
