"""`ClientHub`: the actor that serves every client connection of a node (sans-IO).

The gateway reports connections (`ClientConnected` / `ClientDisconnected`) and delivers each
client request as an envelope from the connection's address whose msg_id is the client's request
id, so `ctx.reply` quotes it. The hub answers every request with exactly one reply or a typed
`Error`, in request order: when an authentication waits on a delegated hook, later requests of
that connection are parked and answered after it. Dispatch is by type through one explicit table
(`OPS`), filled from the mixins that implement the operations: `AuthOps` (sessions and tokens),
`VariableOps` (get, set, subscriptions, local mapping), `AdminOps` (tenants, services, grants,
keys, revocation) and, in a cluster, `ClusterOps` (write concerns, remote writes, catalog merges).

Liveness: any request counts as hearing from a client; a periodic sweep drops clients silent for
`heartbeat_timeout`, ends sessions whose token expired, forgets expired token revocations and
reports touched honeypot files. A stalled connection is dropped by the gateway, which sees its
socket; the hub just hears `ClientDisconnected` and frees what the client held.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from commy.core.actor import Context, handles
from commy.core.admin_ops import AdminOps
from commy.core.auth import Lockout, TokenSigner
from commy.core.auth_ops import AuthOps
from commy.core.catalog import Catalog
from commy.core.drain_ops import LOAD_INTERVAL, DrainOps, DrainState
from commy.core.hlc import HybridClock
from commy.core.hub_base import HubCluster, HubConfig
from commy.core.sessions import ClientConn, SessionState
from commy.core.store_api import ServiceStore
from commy.core.subscriptions import SubscriptionIndex
from commy.core.variable_ops import VariableOps
from commy.errors import RATE_LIMITED, TIMEOUT, RemoteProtocolError
from commy.messages import (
    CLIENT_NODE_PREFIX,
    CLIENT_REQUESTS,
    ClientConnected,
    ClientDisconnected,
    ClientSweepTick,
    DelegatedAuthResult,
    Envelope,
    LoadTick,
    LocalPollTick,
    Message,
    client_address,
)
from commy.messages.base import Address

CLIENTS = "clients"
_PREFIX_LEN = len(CLIENT_NODE_PREFIX)
Op = Callable[[Any, ClientConn, Any, Envelope], None]


class ClientHub(AuthOps, DrainOps):
    """Serves clients: sessions, variables, subscriptions, local mapping and administration."""

    def __init__(self, ctx: Context, *, catalog: Catalog, store: ServiceStore, signer: TokenSigner,
                 entropy: Callable[[int], bytes], config: HubConfig = HubConfig(),
                 auth_hooks: str | None = None, cluster: HubCluster | None = None) -> None:
        super().__init__(ctx)
        self.cluster = cluster
        # A single server stamps its writes too (origin index 1): stamps order writes across restarts.
        self.clock = cluster.clock if cluster is not None else HybridClock(1, ctx.now)
        self.replicator = Address(ctx.address.node, cluster.replicator) if cluster is not None else None
        self.live_peers = set()
        self.ensuring = {}
        self.members = {}
        self.loads = {}
        self.drain_state = DrainState.SERVING
        self.moving = {}
        self.drain_started = 0.0
        self.catalog = catalog
        self.store = store
        self.signer = signer
        self.entropy = entropy
        self.config = config
        self.auth_hooks = auth_hooks
        self.conns = {}
        self.subs = SubscriptionIndex()
        self.key_lockout = Lockout(config.max_failures, config.lockout_window, config.lockout_for)
        self.peer_lockout = Lockout(config.max_failures * 10, config.lockout_window, config.lockout_for)
        self.token_limiter = Lockout(config.tokens_per_minute, 60.0, 60.0)
        self.path_holders = {}  # (tenant, service) -> clients told its path since its last rotation
        self.epoch = 0  # bumped on every catalog change: cached session permissions go stale
        self.open_services = {}  # (tenant, service) -> (handle, names in it); see HubBase
        self.slots = {}
        self.seen = {}  # mapped services: versions broadcast
        self.marks = {}
        self.last_writer = {}
        self.pending_auth = {}  # ref -> (conn id, Authenticate env)
        self.poll_timer: Any = None  # the pending LocalPollTick, while files are mapped
        self.stats = {"requests": 0, "errors": 0, "changes": 0, "rotations": 0, "dropped": 0}
        self.OPS: dict[type[Message], Op] = {}
        for mixin in (AuthOps, VariableOps, AdminOps, DrainOps):
            for tp, name in mixin.REQUESTS.items():
                self.OPS[tp] = getattr(type(self), name)
        missing = CLIENT_REQUESTS - set(self.OPS)
        if missing:  # our bug: a client request type nobody implements
            raise TypeError(f"ClientHub has no operation for {sorted(t.__name__ for t in missing)}")

    def started(self) -> None:
        self.ctx.set_timer(self.config.sweep_interval, ClientSweepTick())
        if self.cluster is not None:
            self.ctx.set_timer(self.ctx.rng.uniform(0, LOAD_INTERVAL), LoadTick())

    # ---- connections

    @handles(ClientConnected)
    def _connected(self, msg: ClientConnected, env: Envelope) -> None:
        now = self.ctx.now()
        self.conns[msg.conn_id] = ClientConn(msg.conn_id, client_address(msg.conn_id), msg.local, msg.peer, now,
                                             opened_at=now)

    @handles(ClientDisconnected)
    def _disconnected(self, msg: ClientDisconnected, env: Envelope) -> None:
        conn = self.conns.get(msg.conn_id)
        if conn is not None:
            self.ctx.log.info("client_left", conn=msg.conn_id, reason=msg.reason,
                              clients=sorted({s.client_id for s in conn.sessions.values()}))
            self.forget(conn, SessionState.CLOSED)
            self.migration_gone(msg.conn_id)

    # ---- requests

    @handles(*CLIENT_REQUESTS)
    def _request(self, msg: Message, env: Envelope) -> None:
        conn = self.conns.get(env.sender.node[_PREFIX_LEN:])
        if conn is None:
            return  # the connection is already gone; its late frames have no one to answer
        conn.last_seen = self.ctx.now()
        if conn.parked is not None:
            if len(conn.parked) >= self.config.max_parked:
                self.drop(conn, RATE_LIMITED, f"more than {self.config.max_parked} requests behind a login")
                return
            conn.parked.append(env)
            return
        self.serve(conn, msg, env)

    @handles(DelegatedAuthResult)
    def _delegated_result(self, msg: DelegatedAuthResult, env: Envelope) -> None:
        pending = self.pending_auth.pop(msg.ref, None)
        if pending is None:
            return  # answered already (the timeout fired first, or the client left)
        conn = self.conns.get(pending[0])
        if conn is None:
            return
        request = pending[1]
        try:
            self.finish_delegated(conn, request, msg)
        except RemoteProtocolError as exc:
            self.refuse(conn, request, exc.code, exc.detail)
        self.unpark(conn)

    # ---- timers

    @handles(ClientSweepTick)
    def _sweep(self, msg: ClientSweepTick, env: Envelope) -> None:
        # Re-armed first: whatever fails below, liveness and expiry keep being enforced.
        self.ctx.set_timer(self.config.sweep_interval, ClientSweepTick())
        now = self.ctx.now()
        config = self.config
        for conn in list(self.conns.values()):
            if now - conn.last_seen > config.heartbeat_timeout:
                self.drop(conn, TIMEOUT, f"no heartbeat for {config.heartbeat_timeout:g} s")
                continue
            if not conn.sessions and conn.parked is None and now - conn.opened_at > config.anonymous_timeout:
                self.drop(conn, TIMEOUT, f"no session within {config.anonymous_timeout:g} s")
                continue
            for tenant, session in list(conn.sessions.items()):
                if session.open and now >= session.expires_at:
                    self.end_session(conn, tenant, SessionState.CLOSED, notify="token expired")
        if self.catalog.prune(now):
            self.catalog_changed()
        for alert in self.store.honeypot_alerts():
            self.ctx.log.error("honeypot_touched", tenant=alert.tenant, service=alert.service, detail=alert.detail)

    @handles(LocalPollTick)
    def _poll(self, msg: LocalPollTick, env: Envelope) -> None:
        self.poll_timer = None
        try:
            self.poll_local_writes()
        finally:  # a failing file must not end the watch over the others
            if self.slots:
                self.poll_timer = self.ctx.set_timer(self.config.local_poll, LocalPollTick())
