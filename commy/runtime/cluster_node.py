"""One node of a configured cluster: the embedded server plus the cluster's actors, from a config file.

`start_cluster_node(config, node_id)` starts `start_server` with what the configuration says for
that node (its client and peer addresses, data folder, heartbeat tuning, TLS, who may use the HTTP
endpoints) and, before the hub, the actors that make it a member: `peer_directory` (tells the TCP
transport where members listen), `heartbeat`, `membership` (joins through the seeds), `replicator`
and `catalog-sync`.
Everything that must agree across nodes comes from the cluster secret: the link handshake's key
(in the transport) and the token key, so a token issued by one node is verified by every other.

Each start of a node is a new incarnation (a counter kept in the data folder), which is how the
other members tell a restarted node from a stale message of its previous life. `RunningServer.close`
first announces a graceful leave (`Leave`), so peers mark it LEFT rather than waiting to see it DOWN.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from commy.config import ClusterConfig
from commy.core.catalog import Catalog
from commy.core.catalog_sync import CATALOG_SYNC, CatalogSync
from commy.core.failover import FAILOVER, FailoverManager
from commy.core.heartbeat import HEARTBEAT, HeartbeatMonitor
from commy.core.hlc import HybridClock
from commy.core.hub_base import HubCluster
from commy.core.members import MEMBERSHIP, Membership
from commy.core.node import Node
from commy.core.replica_state import ReplicationConfig
from commy.core.replication import REPLICATOR, Replicator
from commy.core.session_sync import SESSION_SYNC, SessionSync
from commy.core.store_api import ServiceStore
from commy.messages import MemberInfo
from commy.runtime.peer_directory import PEER_DIRECTORY, PeerDirectory
from commy.runtime.tcp import TcpTransport

if TYPE_CHECKING:
    from commy.core.catalog_records import KdfParams
    from commy.core.hub_base import HubConfig
    from commy.core.node import LogSink
    from commy.runtime.gateway import GatewayConfig
    from commy.runtime.server import RunningServer

INCARNATION_FILE = "incarnation"
Merge = Callable[[bytes, bytes], bytes]


def token_key(secret: bytes) -> bytes:
    """The key every node signs and checks client tokens with, derived from the cluster secret."""
    return hmac.new(secret, b"commy tokens v1", hashlib.sha256).digest()


def next_incarnation(folder: Path) -> int:
    """One more than the last start recorded in `folder` (1 on the first start), recorded at once."""
    path = folder / INCARNATION_FILE
    try:
        last = int(path.read_text().strip() or "0")
    except (FileNotFoundError, ValueError):
        last = 0
    from commy.runtime.server import write_atomic  # the server imports this module lazily

    write_atomic(path, f"{last + 1}\n".encode())
    return last + 1


def replication_config(config: ClusterConfig) -> ReplicationConfig:
    t = config.timeouts
    return ReplicationConfig(replication_factor=config.replication_factor, cluster_size=len(config.nodes),
                             write_timeout=t.write, anti_entropy_interval=t.anti_entropy, transfer_timeout=t.transfer,
                             ensure_timeout=t.write, conflict=config.conflict, priorities=config.priorities)


def hub_cluster(config: ClusterConfig, clock: HybridClock) -> HubCluster:
    return HubCluster(clock=clock, replicator=REPLICATOR, replication_factor=config.replication_factor,
                      cluster_size=len(config.nodes), default_concern=config.write_concern,
                      session_sync=SESSION_SYNC)


def spawn_members(node: Node, config: ClusterConfig, me: MemberInfo, store: ServiceStore, clock: HybridClock,
                  catalog: Catalog, transport: TcpTransport | None, merge: Merge | None = None) -> None:
    """The cluster's actors on `node` (the hub, which owns `catalog`, comes after them, with
    `hub_cluster`); the replicator only asks the catalog whether a service exists."""
    if transport is not None:
        node.spawn(PEER_DIRECTORY, lambda ctx: PeerDirectory(ctx, transport))
    seeds = [m for m in config.seed_members() if m.node_id != me.node_id]
    node.spawn(HEARTBEAT, lambda ctx: HeartbeatMonitor(ctx, [], config.heartbeat))
    node.spawn(MEMBERSHIP, lambda ctx: Membership(ctx, me, seeds))
    node.spawn(REPLICATOR, lambda ctx: Replicator(ctx, store=store, clock=clock, me=me,
                                                  config=replication_config(config), merge=merge,
                                                  exists=catalog.has_service))
    node.spawn(CATALOG_SYNC, lambda ctx: CatalogSync(ctx, catalog.snapshot()))
    node.spawn(FAILOVER, FailoverManager)
    node.spawn(SESSION_SYNC, lambda ctx: SessionSync(ctx, index=me.index))


async def start_cluster_node(config: ClusterConfig, node_id: str, *, seed: int | None = None,
                             log_sink: LogSink | None = None, hub: HubConfig | None = None,
                             kdf: KdfParams | None = None, merge: Merge | None = None,
                             gateway: GatewayConfig | None = None, strict: bool = False) -> RunningServer:
    """Start node `node_id` of `config` on the running loop."""
    from commy.runtime.server import server_ssl_context, start_server

    if config.conflict == "merge" and merge is None:
        raise ValueError(f"{config.path or 'the configuration'}: cluster.conflict: \"merge\" needs the merge "
                         "function, given in code: start the node with start_cluster_node(..., merge=fn)")
    me = config.node(node_id)
    folder = Path(me.data)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    ssl = server_ssl_context(config.tls.cert, config.tls.key) if config.tls is not None else None
    if hub is None:
        from commy.core.hub_base import HubConfig

        hub = HubConfig(heartbeat_timeout=config.timeouts.client_heartbeat)
    return await start_server(folder, me.listen, node_id=node_id, ssl=ssl, cluster=config,
                              incarnation=next_incarnation(folder), merge=merge, seed=seed, log_sink=log_sink,
                              hub=hub, kdf=kdf, gateway=gateway, strict=strict, http=config.http)


__all__ = ["hub_cluster", "next_incarnation", "replication_config", "spawn_members", "start_cluster_node",
           "token_key"]
