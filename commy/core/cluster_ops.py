"""The hub's side of the cluster: write concerns, remote writes, catalog merges, resurrection.

A hub in a cluster (`HubCluster` given) shares the node's `HybridClock` with the replicator: every
write through the hub is stamped with it before it goes into the file. After the writes of a
`SetVariables` the hub sends the replicator one `WritesMade`; for concern `local` the hub answers
the client itself, for `replicated` and `quorum` the replicator answers once enough holders
acknowledged (or says `outcome_unknown`). A write concern that cannot be met with the peers this
node sees live is refused with `unavailable` *before* anything is written, so a refused write
never exists anywhere: `quorum` needs a majority of the configured nodes (this one included),
`replicated` needs `replication_factor - 1` live peers.

The replicator hands back writes that other nodes made and that won here (`RemoteWrites`): the hub
announces them to its subscribers like its own. A peer's catalog arrives as `MergeCatalog`; after
the merge every open session is checked against it again (`reconcile`), so a revocation, a logout
or a deleted tenant made on another node ends sessions here too. A request naming a service the
catalog has but this node holds no file for waits (its connection parked, like behind a delegated
login) until the replicator fetched the newest state from a holder (`EnsureService` /
`ServiceReady`): resurrection.
"""

from __future__ import annotations

from commy.core.actor import handles
from commy.core.admin_ops import AdminOps
from commy.core.auth_ops import DELEGATED_KEY
from commy.core.catalog_records import Record, ServiceRecord, TenantRecord
from commy.core.sessions import ClientConn, SessionState
from commy.errors import RemoteProtocolError
from commy.messages import (
    Address,
    EnsureService,
    Envelope,
    MemberLeft,
    MergeCatalog,
    Message,
    PeerStateChanged,
    RemoteWrites,
    Resume,
    ServiceReady,
)
from commy.messages.client import SERVER

LIVE_STATES = frozenset({"healthy", "suspected"})


class ClusterOps(AdminOps):
    """Mixin of `ClientHub`: everything the hub does differently when it is one node of several."""


    # ---- membership, as the hub needs it

    @handles(PeerStateChanged)
    def _peer_state(self, msg: PeerStateChanged, env: Envelope) -> None:
        if msg.new in LIVE_STATES:
            self.live_peers.add(msg.peer)
        else:
            self.live_peers.discard(msg.peer)

    @handles(MemberLeft)
    def _member_left(self, msg: MemberLeft, env: Envelope) -> None:
        self.live_peers.discard(msg.node_id)

    # ---- writes from other nodes

    @handles(RemoteWrites)
    def _remote_writes(self, msg: RemoteWrites, env: Envelope) -> None:
        for change in msg.changes:
            key = (change.tenant, change.service)
            self.last_writer[(change.tenant, change.service, change.name)] = change.changed_by
            seen = self.seen.get(key)
            if seen is not None:
                seen[change.name] = change.version  # written by the replicator: not a local client's write
            served = self.open_services.get(key)
            if served is not None:
                served[1].add(change.name)
            self.broadcast(change)

    # ---- catalog merges

    @handles(MergeCatalog)
    def _merge_catalog(self, msg: MergeCatalog, env: Envelope) -> None:
        adopted: list[Record] = []
        if not self.catalog.merge_snapshot(msg.snapshot, now=self.ctx.now(), adopted=adopted):
            return
        self.catalog_changed()  # even when only the catalog's clock moved: else the digests never match
        self.reconcile()
        for rec in adopted:  # deletions made elsewhere: this node's copies go too
            if isinstance(rec, TenantRecord) and rec.deleted and not self.catalog.has_tenant(rec.name):
                self.subs.drop_tenant(rec.name)
                if rec.name in self.store.tenants():
                    self.store.remove_tenant(rec.name)
            elif (isinstance(rec, ServiceRecord) and rec.deleted and not self.catalog.has_service(rec.tenant, rec.name)
                  and self.store.exists(rec.tenant, rec.name)):
                self.store.remove(rec.tenant, rec.name)
                self.open_services.pop((rec.tenant, rec.name), None)

    def reconcile(self) -> None:
        """Bring every open session in line with the catalog after a merge from a peer."""
        for conn in list(self.conns.values()):
            for tenant, session in list(conn.sessions.items()):
                if not session.open:
                    continue
                reason = self._why_ended(tenant, session.client_id, session.key_id, session.token_id)
                if reason is not None:
                    self.end_session(conn, tenant, SessionState.REVOKED, notify=reason)
                    self.ctx.log.warning("session_revoked", conn=conn.conn_id, tenant=tenant,
                                         client=session.client_id, reason=reason)
        for tenant in {t for c in self.conns.values() for t in c.sessions if t != SERVER}:
            clients = {s.client_id for c in self.conns.values() for t, s in c.sessions.items() if t == tenant}
            self.enforce(tenant, clients, reason="permission revoked")
        for key in [k for k in self.slots if not self.catalog.has_service(*k)]:
            for conn in list(self.conns.values()):
                self.release_mapping(conn, key)
            self.subs.drop_service(*key)

    def _why_ended(self, tenant: str, client_id: str, key_id: str, token_id: str) -> str | None:
        if self.catalog.token_revoked(token_id):
            return "logged out"
        if tenant != SERVER and not self.catalog.has_tenant(tenant):
            return "tenant deleted"
        if key_id != DELEGATED_KEY and not any(k.key_id == key_id and not k.revoked
                                               for k in self.catalog.api_keys(client_id)):
            return "api key revoked"
        if tenant != SERVER and not self.permissions_of(client_id, tenant):
            return "permission revoked"
        return None

    # ---- resurrection

    def serve(self, conn: ClientConn, msg: Message, env: Envelope) -> None:
        if self.cluster is not None:
            key = self.needs_fetch(msg)
            if key is not None:
                self.fetch_first(conn, key, env)
                return
        super().serve(conn, msg, env)

    def needs_fetch(self, msg: Message) -> tuple[str, str] | None:
        """A service `msg` names that this node must fetch from a holder before serving it."""
        if type(msg) is Resume:  # one request, many services: fetched one at a time
            for sv in msg.last_seen[:self.config.max_names]:
                key = self._missing(sv.tenant, sv.service)
                if key is not None:
                    return key
            return None
        return self._missing(getattr(msg, "tenant", None), getattr(msg, "service", None))

    def _missing(self, tenant: object, service: object) -> tuple[str, str] | None:
        if type(tenant) is not str or type(service) is not str or not service:
            return None
        if (tenant, service) in self.open_services or not self.catalog.has_service(tenant, service):
            return None
        try:
            exists = self.store.exists(tenant, service)
        except RemoteProtocolError:
            return None  # a bad name: the operation itself refuses it
        return None if exists else (tenant, service)

    def fetch_first(self, conn: ClientConn, key: tuple[str, str], env: Envelope) -> None:
        """Park `conn` with `env` at its head until `key` arrives from a holder."""
        self.park(conn)
        assert conn.parked is not None
        conn.parked.append(env)
        waiting = self.ensuring.get(key)
        if waiting is None:
            self.ensuring[key] = [conn.conn_id]
            assert self.cluster is not None
            self.ctx.send(Address(self.ctx.address.node, self.cluster.replicator), EnsureService(*key))
        else:
            waiting.append(conn.conn_id)

    @handles(ServiceReady)
    def _service_ready(self, msg: ServiceReady, env: Envelope) -> None:
        key = (msg.tenant, msg.service)
        waiting = self.ensuring.pop(key, [])
        if self.catalog.has_service(*key) and not self.store.exists(*key):
            self.store.open(*key, create=True)  # no holder had it: it starts empty here
        self.ctx.log.info("service_ready", tenant=msg.tenant, service=msg.service, fetched=msg.fetched,
                          waiting=len(waiting))
        for conn_id in waiting:
            conn = self.conns.get(conn_id)
            if conn is not None and conn.parked is not None:
                self.unpark(conn)
