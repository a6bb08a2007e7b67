"""The simulated commy cluster application: full nodes on a `SimCluster`, and their clients.

`SimApp` is what a cluster scenario runs. Its `build(node)` puts on every node the actors a real
server runs, wired by the runtime's own `spawn_members` from a `ClusterConfig` made up for the run
(heartbeat monitor, membership with every node a seed, replicator, catalog sync, failover manager;
no TCP transport: the simulated network carries the peer messages), then the client hub in cluster
mode sharing the node's `HybridClock` -- plus `DiskKeeper`, which stands for the runtime saving
the catalog whenever the hub publishes `CatalogChanged`. A node's "disk" is
a `Disk`: its `MemoryStore` and its last saved catalog, kept across crashes and restarts (a fault
may wipe it: `lose_disk`). Every node starts from the same catalog, bootstrapped once per run:
a tenant or two with one service each, an API key per client (cheap KDF parameters: logins cost
microseconds, not the KDF's real cost), grants on its own tenant only, and a server admin key.
All nodes derive the token key from the cluster secret, so a token issued by one is valid on every
other. Replication settings a cluster file does not carry (sync and chunk sizes) are set on the
replicator right after it is spawned.

`start(cluster, duration, timeline)` attaches the clients (`sim.clients`): per tenant some writers
(concern `replicated` by default, one variable every `write_interval`) and readers, each with the
node list rotated so connections spread over the cluster. The load stops `QUIESCE` seconds before
the end, so the heal-and-quiesce phase sees the cluster settle and the checkers
(`sim.cluster_checkers`) judge the final state. Randomness comes from a stream seeded by the run's
seed alone (the cluster's own streams are untouched).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from commy.config import ClusterConfig, NodeConfig, Timeouts
from commy.core.actor import Actor, Context, handles
from commy.core.auth import TokenSigner
from commy.core.catalog import Catalog
from commy.core.catalog_records import KdfParams
from commy.core.clients import CLIENTS, ClientHub
from commy.core.heartbeat import HeartbeatConfig
from commy.core.hlc import HybridClock
from commy.core.hub_base import HubConfig
from commy.core.node import Node
from commy.core.permissions import parse_scopes
from commy.core.replication import REPLICATOR, ReplicationConfig, Replicator
from commy.messages import CatalogChanged, DrainNode, Envelope, RevokeApiKey
from commy.messages.client import SERVER
from commy.runtime.cluster_node import hub_cluster, spawn_members, token_key
from commy.store.memory import MemoryStore
from sim.admin_client import AdminClient, AdminStep
from sim.client_net import ClientNetwork
from sim.clients import ClientSpec, SimClient
from sim.scheduler import EPOCH

if TYPE_CHECKING:
    from sim.checkers import Checker
    from sim.cluster import SimCluster
    from sim.host import SimHost
    from sim.timeline import Timeline

CHEAP_KDF = KdfParams(n=2, r=1, p=1)
DISK = "disk"
QUIESCE = 3.0  # as sim.scenarios: the load stops this long before the end


@dataclass(frozen=True)
class AppConfig:
    tenants: tuple[str, ...] = ("acme", "globex")
    service: str = "telemetry"
    writers: int = 2  # per tenant
    readers: int = 1  # per tenant
    variables: int = 3  # per service, shared by its writers (so their writes conflict)
    write_interval: float = 0.1
    concern: str = "replicated"  # the hub's default
    concerns: tuple[str, ...] = ("replicated",)  # writer j of a tenant writes with concerns[j % len]
    value_size: int = 0  # pad written values to this many bytes (big services: snapshot transfers)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)  # cluster_size: the node count
    hub: HubConfig = field(default_factory=HubConfig)
    heartbeat: HeartbeatConfig = field(default_factory=HeartbeatConfig)
    catalog_interval: float = 0.5
    client_latency: float = 0.001
    client_jitter: float = 0.0005
    request_timeout: float = 4.0
    resubscribe: bool = False  # clients subscribe again after a Resume (no: the hub must restore them)
    intruders: bool = True  # the first writer of each tenant also tries, now and then, the next tenant


@dataclass
class Disk:
    """What survives a crash: the service store and the last catalog snapshot saved."""

    store: MemoryStore
    catalog: bytes


@dataclass
class Credentials:
    client_id: str
    key_id: str
    key: str
    tenant: str


class DiskKeeper(Actor):
    """The runtime's part in persistence: the hub publishes each new catalog, this saves it."""

    def __init__(self, ctx: Context, disk: Disk) -> None:
        super().__init__(ctx)
        self.disk = disk

    @handles(CatalogChanged)
    def _changed(self, msg: CatalogChanged, env: Envelope) -> None:
        self.disk.catalog = msg.snapshot


@dataclass
class AdminAction:
    """A scripted admin request -- a key revocation, a drain -- sent by an admin client on `via`."""

    target: str  # the client whose key is revoked, or the node drained
    via: str
    at: float
    admin: AdminClient
    step: AdminStep

    @property
    def done_at(self) -> float | None:
        """When the request was answered (AdminDone or an Error), if it was."""
        return self.step.done_at


class SimApp:
    """Builds the nodes, owns their disks and the clients, and sums a run up for its result."""

    def __init__(self, node_ids: Sequence[str], seed: int, config: AppConfig = AppConfig()) -> None:
        self.node_ids = list(node_ids)
        self.config = config
        self.rng = random.Random(f"commy-sim-app/{seed}")
        self.replication = replace(config.replication, cluster_size=len(self.node_ids))
        self.secret = self.rng.randbytes(32)
        self.cluster_config = self._cluster_config()
        self.credentials: dict[str, Credentials] = {}  # by client id ("admin": the server admin's)
        self.bootstrap = self._bootstrap_catalog()
        self.disks = {n: Disk(MemoryStore(), self.bootstrap) for n in self.node_ids}
        self.cluster: SimCluster | None = None
        self.net: ClientNetwork | None = None
        self.clients: list[SimClient] = []
        self.admins: list[AdminClient] = []
        self.revocations: list[AdminAction] = []
        self.drains: list[AdminAction] = []
        self.disk_losses: list[tuple[float, str]] = []
        self.load_stopped_at: float | None = None
        from sim.cluster_checkers import cluster_checkers

        self.checkers: list[Checker] = cluster_checkers(self)

    def _cluster_config(self) -> ClusterConfig:
        """What a cluster file would say: the nodes (made-up addresses), the secret, the settings."""
        cfg, rep = self.config, self.replication
        nodes = tuple(NodeConfig(n, i + 1, (f"10.0.0.{i + 1}", 7400), (f"10.0.0.{i + 1}", 7300), Path(f"/sim/{n}"))
                      for i, n in enumerate(self.node_ids))
        timeouts = Timeouts(write=rep.write_timeout, anti_entropy=rep.anti_entropy_interval,
                            transfer=rep.transfer_timeout, client_heartbeat=cfg.hub.heartbeat_timeout)
        return ClusterConfig("sim", self.secret, nodes, replication_factor=rep.replication_factor,
                             write_concern=cfg.concern, conflict=rep.conflict, heartbeat=cfg.heartbeat,
                             timeouts=timeouts)

    # ---- the catalog every node starts from

    def _entropy(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def _bootstrap_catalog(self) -> bytes:
        cfg = self.config
        catalog = Catalog(kdf=CHEAP_KDF, entropy=self._entropy)
        now = EPOCH
        key_id, key = catalog.create_api_key("ops", server_admin=True, now=now, entropy=self._entropy)
        self.credentials["admin"] = Credentials("ops", key_id, key, SERVER)
        for tenant in cfg.tenants:
            catalog.create_tenant(tenant, now)
            catalog.create_service(tenant, cfg.service, now)
            for role, count in (("w", cfg.writers), ("r", cfg.readers)):
                for j in range(count):
                    name = f"{tenant}-{role}{j + 1}"
                    key_id, key = catalog.create_api_key(name, server_admin=False, now=now, entropy=self._entropy)
                    catalog.grant(name, tenant, parse_scopes(["write" if role == "w" else "read"]), now)
                    self.credentials[name] = Credentials(name, key_id, key, tenant)
        return catalog.snapshot()

    # ---- nodes

    def build(self, node: Node) -> None:
        nid = node.node_id
        host = cast("SimHost", node.host)
        disk = self.disks[nid]
        me = self.cluster_config.member_info(nid, host.incarnation)
        clock = HybridClock(me.index, host.now)
        entropy = random.Random(node.rng.getrandbits(64)).randbytes
        catalog = Catalog.restore(disk.catalog, kdf=CHEAP_KDF, entropy=entropy)
        node.spawn(DISK, lambda ctx: DiskKeeper(ctx, disk))
        # The production wiring (`commy.runtime.cluster_node`), minus the TCP transport.
        spawn_members(node, self.cluster_config, me, disk.store, clock, catalog, None)
        replicator = node.actors[REPLICATOR]
        if isinstance(replicator, Replicator):  # settings a cluster file does not carry (sync sizes)
            rep = self.replication
            replicator.config = replace(replicator.config, max_sync_bytes=rep.max_sync_bytes, chunk_size=rep.chunk_size,
                                        transfer_retries=rep.transfer_retries, snapshot_ttl=rep.snapshot_ttl)
        node.spawn(CLIENTS, lambda ctx: ClientHub(ctx, catalog=catalog, store=disk.store,
                                                  signer=TokenSigner(token_key(self.secret)), entropy=entropy,
                                                  config=self.config.hub,
                                                  cluster=hub_cluster(self.cluster_config, clock)))

    def lose_disk(self, node_id: str) -> None:
        """Wipe the node's disk (use with a crash): it restarts empty, with the bootstrap catalog."""
        assert self.cluster is not None
        self.disks[node_id] = Disk(MemoryStore(), self.bootstrap)
        self.disk_losses.append((self.cluster.now, node_id))
        self.cluster.trace.record(self.cluster.now, node_id, "sim", "disk_lost", None)

    def crash_losing_disk(self, node_id: str) -> None:
        assert self.cluster is not None
        self.cluster.crash(node_id)
        self.lose_disk(node_id)

    def at(self, t: float, fn: Any, *args: Any) -> None:
        """Call `fn(*args)` at `t` seconds after the start (faults of the application's own)."""
        assert self.cluster is not None
        self.cluster.sched.at(self.cluster.sched.epoch + t, lambda _: fn(*args))

    # ---- clients

    def start(self, cluster: SimCluster, duration: float, timeline: Timeline | None = None) -> None:
        """Attach the clients and schedule the end of the load (`QUIESCE` s before `duration`)."""
        self.cluster = cluster
        cluster.app = self
        cfg = self.config
        self.net = ClientNetwork(cluster, random.Random(self.rng.getrandbits(64)), latency=cfg.client_latency,
                                 jitter=cfg.client_jitter)
        names = tuple(f"v{i}" for i in range(cfg.variables))
        k = 0
        for tenant in cfg.tenants:
            for role, count in (("w", cfg.writers), ("r", cfg.readers)):
                for j in range(count):
                    cred = self.credentials[f"{tenant}-{role}{j + 1}"]
                    others = [t for t in cfg.tenants if t != tenant]
                    intrude = others[0] if cfg.intruders and others and role == "w" and j == 0 else ""
                    spec = ClientSpec(
                        name=f"c{k + 1}", client_id=cred.client_id, key=cred.key, tenant=tenant, service=cfg.service,
                        servers=self._rotated(k), subscribe=names, writes=names if role == "w" else (),
                        write_interval=cfg.write_interval, concern=cfg.concerns[j % len(cfg.concerns)],
                        value_size=cfg.value_size, resubscribe=cfg.resubscribe,
                        start_at=0.2 + 0.05 * k, request_timeout=cfg.request_timeout, intrude=intrude)
                    self.add_client(spec)
                    k += 1
        cluster.sched.at(cluster.sched.epoch + max(0.0, duration - QUIESCE), self._stop_load)
        if timeline is not None:
            self._narrate(timeline)

    def _rotated(self, k: int) -> tuple[str, ...]:
        ids = self.node_ids
        i = k % len(ids)
        return tuple(ids[i:] + ids[:i])

    def _peer(self) -> str:
        n = len(self.clients) + len(self.admins) + 1
        return f"10.1.{n // 250}.{n % 250 + 1}:{40000 + n}"

    def add_client(self, spec: ClientSpec) -> SimClient:
        assert self.net is not None, "start() first"
        client = SimClient(spec, self.net, random.Random(self.rng.getrandbits(64)), self._peer())
        self.clients.append(client)
        client.start()
        return client

    def client(self, name: str) -> SimClient:
        return next(c for c in self.clients if c.name == name)

    def admin(self, via: str, start_at: float) -> AdminClient:
        """A server admin connected to `via` from `start_at` on."""
        assert self.net is not None, "start() first"
        cred = self.credentials["admin"]
        spec = ClientSpec(name=f"a{len(self.admins) + 1}", client_id=cred.client_id, key=cred.key, tenant=SERVER,
                          service="", servers=(via,), start_at=start_at)
        admin = AdminClient(spec, self.net, random.Random(self.rng.getrandbits(64)), self._peer())
        self.admins.append(admin)
        admin.start()
        return admin

    def revoke(self, victim: str, via: str, at: float) -> AdminAction:
        """At `at`, an admin on `via` revokes the API key of client `victim` (its sessions must end)."""
        cred = self.credentials[self.client(victim).spec.client_id]
        admin = self.admin(via, max(0.0, at - 0.5))
        rev = AdminAction(victim, via, at, admin, admin.at(at, RevokeApiKey(cred.key_id)))
        self.revocations.append(rev)
        return rev

    def drain(self, node_id: str, via: str, at: float) -> AdminAction:
        """At `at`, an admin on `via` drains `node_id`: its clients move away, then it leaves."""
        admin = self.admin(via, max(0.0, at - 0.5))
        drain = AdminAction(node_id, via, at, admin, admin.at(at, DrainNode(node_id)))
        self.drains.append(drain)
        return drain

    @property
    def retired(self) -> set[str]:
        """Nodes drained (the admin's request answered): members no more, whatever they still hold."""
        return {d.target for d in self.drains if d.done_at is not None}

    def _stop_load(self, _: Any) -> None:
        assert self.cluster is not None
        self.load_stopped_at = self.cluster.now
        for c in self.clients:
            c.stop_writing()

    # ---- results

    def failover_times(self) -> list[float]:
        """Seconds from a client losing its node to its session resumed on another, for each failover."""
        return [f.resumed_at - f.lost_at for c in self.clients for f in c.failovers if f.resumed_at is not None]

    def metrics(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {
            "write_latency": [w.acked_at - w.sent_at for c in self.clients for w in c.acked],
        }
        if self.cluster is not None:
            lags: list[float] = []
            for n in self.node_ids:
                if self.cluster.alive(n):
                    rep = self.cluster.node(n).actors.get(REPLICATOR)
                    if isinstance(rep, Replicator):
                        lags.extend(rep.lag_samples)
            out["replication_lag"] = lags
        return out

    def summary(self) -> dict[str, int]:
        """Counts for the timeline's closing lines."""
        return {
            "acked": sum(len(c.acked) for c in self.clients),
            "unknown": sum(len(c.unknown) for c in self.clients),
            "refused": sum(len(c.refused) for c in self.clients),
            "errors": sum(len(c.errors) for c in self.clients),
            "received": sum(len(c.received) for c in self.clients),
            "failovers": sum(len(c.failovers) for c in self.clients),
        }

    def describe(self) -> str:
        s = self.summary()
        times = sorted(self.failover_times())
        text = (f"clients: {s['acked']} writes acknowledged, {s['unknown']} outcome unknown, {s['refused']} refused, "
                f"{s['received']} values received, {s['failovers']} failovers")
        if times:
            text += f" (resumed in {times[0]:.3f}-{times[-1]:.3f}s)"
        return text

    def _narrate(self, timeline: Timeline) -> None:
        """Timeline lines for client failovers, revocations and admin actions."""
        assert self.cluster is not None

        def on_row(row: tuple[float, str, str, str, Any]) -> None:
            t, who, _, event, detail = row
            if event == "c:resumed":
                client = next((c for c in self.clients if c.name == who), None)
                lost = client.failovers[-1] if client is not None and client.failovers else None
                after = f" ({t - lost.lost_at:.3f}s after losing {lost.from_node})" if lost else ""
                timeline.add(t, f"client {who} resumed on {detail[0]}{after}, {detail[2]} missed changes")
            elif event == "c:revoked":
                timeline.add(t, f"client {who} loses tenant {detail[0]!r}: {detail[1]}")
            elif event == "c:logged_out":
                timeline.add(t, f"client {who} logged out of tenant {detail!r}")
            elif event == "c:migrate":
                timeline.add(t, f"client {who} told to move from {detail[0]} to {detail[1]}")
            elif event == "c:admin":
                timeline.add(t, f"admin {who} on {detail[1]}: {detail[0]} -> {detail[2]}")
            elif event == "disk_lost":
                timeline.add(t, f"{who} loses its disk")

        self.cluster.trace.subscribe(on_row, ("c:resumed", "c:revoked", "c:logged_out", "c:migrate", "c:admin",
                                              "disk_lost"))

