"""A client hub on a real `Node` with a fake host, an in-memory store and a cheap KDF.

`HubHarness` connects pretend clients (`connect`), sends them requests (`ask`, which returns the
one reply that request got) and collects what the hub pushed to each connection (`events`). A
server admin key exists from the start (`admin_key`), and `setup_tenant` makes a tenant with a
client holding the given scopes, ready to authenticate.

In a cluster (`HubHarness(cluster=in_cluster(...))`) the hub is one node of several: next to it
run recording stand-ins for the node's "replicator", "failover" and "membership" actors, whose
inboxes `to_actor` shows; `peer_up` / `peer_down` publish what the heartbeat monitor would, and
`from_peer` delivers a message from another node's hub. The cluster's clock is rebuilt on the
harness's own (fake) clock, keeping its index.
"""

from __future__ import annotations

import random
from dataclasses import replace
from itertools import count

from commy.core.actor import Actor, Context, handles
from commy.core.auth import TokenSigner
from commy.core.catalog import Catalog
from commy.core.catalog_records import KdfParams
from commy.core.clients import CLIENTS, ClientHub, HubConfig
from commy.core.drain_ops import MEMBERSHIP
from commy.core.failover import FAILOVER
from commy.core.hlc import HybridClock
from commy.core.hub_base import HubCluster
from commy.core.node import Node
from commy.messages import (
    Address,
    Authenticate,
    AuthenticationResponse,
    ClientConnected,
    ClientDisconnected,
    DelegatedAuthRequest,
    EnsureService,
    Envelope,
    Leave,
    MemberInfo,
    MemberUp,
    Message,
    MigrationRecorded,
    PeerStateChanged,
    WritesMade,
    client_address,
    new_envelope,
)
from tests.helpers.fake_host import FakeHost
from tests.helpers.memory_store import MemoryStore

CHEAP_KDF = KdfParams(n=2, r=1, p=1)


class _HookRecorder(Actor):
    """Stands for the runtime's auth-hook runner: keeps the requests for the test to answer."""

    def __init__(self, ctx: Context, log: list[DelegatedAuthRequest]) -> None:
        super().__init__(ctx)
        self.log = log

    @handles(DelegatedAuthRequest)
    def _ask(self, msg: DelegatedAuthRequest, env: Envelope) -> None:
        self.log.append(msg)


class _Recorder(Actor):
    """Stands for one of the node's cluster actors: keeps what the hub sent it."""

    def __init__(self, ctx: Context, log: list[Envelope]) -> None:
        super().__init__(ctx)
        self.log = log

    @handles(WritesMade, EnsureService, MigrationRecorded, Leave)
    def _got(self, msg: Message, env: Envelope) -> None:
        self.log.append(env)


def in_cluster(*, size: int = 3, replication_factor: int = 2, concern: str = "local", index: int = 1) -> HubCluster:
    """A `HubCluster` for `HubHarness(cluster=...)` (which rebinds its clock to the fake host)."""
    return HubCluster(clock=HybridClock(index, lambda: 0.0), replication_factor=replication_factor,
                      cluster_size=size, default_concern=concern)


class HubHarness:
    def __init__(self, config: HubConfig = HubConfig(), *, auth_hooks: str | None = None, seed: int = 1,
                 cluster: HubCluster | None = None) -> None:
        self.host = FakeHost(now=1_000_000.0)
        self.node = Node("n1", self.host, seed, strict=True)
        self._rng = random.Random(seed)
        self.catalog = Catalog(kdf=CHEAP_KDF, entropy=self._entropy)
        self.store = MemoryStore()
        self.admin_key = self.catalog.create_api_key("admin", server_admin=True, now=self.host.now(),
                                                     entropy=self._entropy)[1]
        self.recorded: dict[str, list[Envelope]] = {}
        if cluster is not None:
            cluster = replace(cluster, clock=HybridClock(cluster.clock.index, self.host.now))
            for name in (cluster.replicator, FAILOVER, MEMBERSHIP):
                inbox = self.recorded[name] = []
                self.node.spawn(name, lambda ctx, inbox=inbox: _Recorder(ctx, inbox))  # type: ignore[misc]
        self.cluster = cluster
        self.node.spawn(CLIENTS, lambda ctx: ClientHub(ctx, catalog=self.catalog, store=self.store,
                                                       signer=TokenSigner(b"k" * 32), entropy=self._entropy,
                                                       config=config, auth_hooks=auth_hooks, cluster=cluster))
        self.hub: ClientHub = self.node.actors[CLIENTS]  # type: ignore[assignment]
        self.hook_requests: list[DelegatedAuthRequest] = []
        if auth_hooks is not None:
            self.node.spawn(auth_hooks, lambda ctx: _HookRecorder(ctx, self.hook_requests))
        self._ids = count(1)
        self._conns = count(1)

    def _entropy(self, n: int) -> bytes:
        return self._rng.randbytes(n)

    # ---- connections and requests

    def connect(self, *, local: bool = True, peer: str = "127.0.0.1:5000") -> str:
        conn = f"c{next(self._conns)}"
        self.node.publish(ClientConnected(conn, local, peer))
        return conn

    def disconnect(self, conn: str, reason: str = "closed") -> None:
        self.node.publish(ClientDisconnected(conn, reason))

    def send(self, conn: str, msg: Message) -> int:
        rid = next(self._ids)
        self.node.deliver(new_envelope(rid, None, client_address(conn), Address("n1", CLIENTS), self.host.now(), msg))
        return rid

    def ask(self, conn: str, msg: Message) -> Message:
        """Send one request; return its one reply (and fail if there is not exactly one)."""
        rid = self.send(conn, msg)
        replies = [e.body for e in self._to(conn) if e.request_id == rid]
        assert len(replies) == 1, f"{type(msg).__name__} got {len(replies)} replies: {replies}"
        return replies[0]

    def _to(self, conn: str) -> list[Envelope]:
        return [e for e in self.host.transmitted if e.receiver == client_address(conn)]

    def events(self, conn: str, kind: type[Message] | None = None) -> list[Message]:
        return [e.body for e in self._to(conn) if not e.request_id and (kind is None or type(e.body) is kind)]

    # ---- common setups

    def login(self, conn: str, tenant: str, key: str) -> AuthenticationResponse:
        reply = self.ask(conn, Authenticate(tenant, "api_key", key))
        assert isinstance(reply, AuthenticationResponse), reply
        return reply

    def admin(self) -> str:
        conn = self.connect()
        self.login(conn, "", self.admin_key)
        return conn

    def setup_tenant(self, tenant: str, client_id: str, scopes: frozenset[str] = frozenset({"write"})) -> str:
        """Create `tenant` (if new) and a key for `client_id` with `scopes` there; returns the key."""
        from commy.core.permissions import parse_scopes

        now = self.host.now()
        if not self.catalog.has_tenant(tenant):
            self.catalog.create_tenant(tenant, now)
        key = self.catalog.create_api_key(client_id, server_admin=False, now=now, entropy=self._entropy)[1]
        self.catalog.grant(client_id, tenant, parse_scopes(scopes), now)
        self.hub.epoch += 1
        return key

    def node_envelope(self, msg: Message, to: str = CLIENTS, sender: str = "hooks") -> Envelope:
        """An envelope from another actor on this node (e.g. the runtime's auth-hook runner)."""
        return new_envelope(0, None, Address("n1", sender), Address("n1", to), self.host.now(), msg)

    # ---- a cluster around the hub

    def from_actor(self, sender: str, msg: Message) -> None:
        """Deliver `msg` to the hub from actor `sender` of this node (e.g. the replicator)."""
        self.node.deliver(self.node_envelope(msg, sender=sender))

    def from_peer(self, peer: str, msg: Message) -> None:
        """Deliver `msg` to the hub from the hub of node `peer`."""
        self.node.deliver(new_envelope(next(self._ids), None, Address(peer, CLIENTS), Address("n1", CLIENTS),
                                       self.host.now(), msg))

    def to_actor(self, name: str, kind: type[Message] | None = None) -> list[Message]:
        """What the hub sent this node's actor `name` (a recording stand-in), oldest first."""
        return [e.body for e in self.recorded[name] if kind is None or type(e.body) is kind]

    def to_peer(self, peer: str, kind: type[Message] | None = None) -> list[Envelope]:
        """Envelopes the hub sent to node `peer`."""
        return [e for e in self.host.transmitted if e.receiver.node == peer and (kind is None or type(e.body) is kind)]

    def member(self, node_id: str, index: int) -> MemberInfo:
        """Announce `node_id` as a cluster member (as the membership actor would) and return it."""
        info = MemberInfo(node_id, index, "127.0.0.1", 7000 + index, f"ws://127.0.0.1:{8000 + index}", 1)
        self.node.publish(MemberUp(info))
        return info

    def peer_state(self, peer: str, old: str, new: str) -> None:
        self.node.publish(PeerStateChanged(peer, old, new, self.host.now()))

    def peer_up(self, *peers: str) -> None:
        """`peers` join and answer heartbeats: members, and live."""
        for peer in peers:
            if peer not in self.hub.members:
                self.member(peer, 2 + len(self.hub.members))
            self.peer_state(peer, "joining", "healthy")

    def peer_down(self, *peers: str) -> None:
        for peer in peers:
            self.peer_state(peer, "healthy", "down")
