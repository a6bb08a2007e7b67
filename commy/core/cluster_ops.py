"""The hub's side of the cluster: write concerns, remote writes, catalog merges, resurrection.

A hub in a cluster (`HubCluster` given) shares the node's `HybridClock` with the replicator: every
write through the hub is stamped with it before it goes into the file. After the writes of a
`SetVariables` the hub sends the replicator one `WritesMade`; for concern `local` the hub answers
the client itself, for `replicated` and `quorum` the replicator answers once enough holders
acknowledged (or says `outcome_unknown`). A write concern that cannot be met with the peers this
node sees live is refused with `unavailable` *before* anything is written, so a refused write
never exists anywhere: `quorum` needs a majority of the configured nodes (this one included),
`replicated` needs `replication_factor - 1` live peers.

Right after the node starts, its clock may be behind the stamps it issued before a restart (a
lost disk, a wall clock gone back): the replicator says so (`ClockCatchingUp`) until the peers'
digests brought the clock up to date (`ClockSynced`). Meanwhile every write is refused with
`unavailable` before anything is written ("catching up: retry"), and direct writes into mapped
files wait unstamped for the first poll after. A single server is never held back.

The replicator hands back writes that other nodes made and that won here (`RemoteWrites`): the hub
announces them to its subscribers like its own. A peer's catalog arrives as `MergeCatalog`; after
the merge every open session is checked against it again (`reconcile`), so a revocation, a logout
or a deleted tenant made on another node ends sessions here too -- and, as a revocation made here
does, files whose path a client that lost access was told (even one gone since) are rotated. A
request naming a service the catalog has but this node holds no file for waits (its connection
parked, like behind a delegated login) until the replicator fetched the newest state from a holder
(`EnsureService` / `ServiceReady`): resurrection. Only a request that could be served is worth a
fetch: one on a tenant its connection holds a session on, or a Resume with a valid token.
"""

from __future__ import annotations

from commy.core.actor import handles
from commy.core.admin_ops import AdminOps
from commy.core.auth_ops import DELEGATED_KEY
from commy.core.catalog_records import ApiKeyRecord, Record, ServiceRecord, TenantRecord
from commy.core.membership import REACHABLE
from commy.core.permissions import Permission
from commy.core.sessions import ClientConn, SessionState
from commy.errors import UNAVAILABLE, RemoteProtocolError
from commy.messages import (
    Address,
    ClockCatchingUp,
    ClockSynced,
    EnsureService,
    Envelope,
    Error,
    MemberLeft,
    MergeCatalog,
    Message,
    PeerStateChanged,
    RemoteWrites,
    Resume,
    ServiceReady,
)
from commy.messages.client import SERVER

LIVE_STATES = REACHABLE


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

    # ---- the clock catching up at start

    @handles(ClockCatchingUp)
    def _catching_up(self, msg: ClockCatchingUp, env: Envelope) -> None:
        if self.cluster is not None:  # a single server has no peers to catch up with
            self.catching_up_since = msg.since
            self.ctx.log.info("clock_catching_up")

    @handles(ClockSynced)
    def _clock_synced(self, msg: ClockSynced, env: Envelope) -> None:
        if self.catching_up_since is not None:
            self.catching_up_since = None
            self.ctx.log.info("writes_accepted", waited=round(msg.waited, 3), complete=msg.complete)
            # (direct writes into mapped files made meanwhile are stamped by the next local poll)

    def refuse(self, conn: ClientConn, env: Envelope, code: str, detail: str) -> None:
        """`unavailable` (a write concern the cluster cannot meet now, a node that drains) is not
        the client's fault: it does not count toward `max_bad_requests`, else a client writing
        through a partition would be dropped as a misbehaving one."""
        if code == UNAVAILABLE:
            self.stats["errors"] += 1
            self.ctx.reply(env, Error(code, detail))
            return
        super().refuse(conn, env, code, detail)

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
        for rec in adopted:
            if isinstance(rec, ApiKeyRecord) and rec.revoked:  # as `revoke_api_key` does here
                self.enforce(SERVER, {rec.client_id}, reason="api key revoked", keys={rec.key_id})
            # deletions made elsewhere: this node's copies go too
            elif isinstance(rec, TenantRecord) and rec.deleted and not self.catalog.has_tenant(rec.name):
                self.subs.drop_tenant(rec.name)
                self._forget_files(rec.name)
                if rec.name in self.store.tenants():
                    self.store.remove_tenant(rec.name)
            elif isinstance(rec, ServiceRecord) and rec.deleted and not self.catalog.has_service(rec.tenant, rec.name):
                key = (rec.tenant, rec.name)
                self._forget_files(*key)
                if self.store.exists(*key):
                    self.store.remove(*key)
                    self.open_services.pop(key, None)

    def _forget_files(self, tenant: str, service: str | None = None) -> None:
        """Forget the writers and path holders of a deleted tenant's (or one service's) files, as
        `delete_service` does: a service made again under the name starts clean."""
        def gone(key: tuple[str, str]) -> bool:
            return key[0] == tenant and (service is None or key[1] == service)
        for var in [v for v in self.last_writer if gone((v[0], v[1]))]:
            del self.last_writer[var]
        for key in [k for k in self.path_holders if gone(k)]:
            del self.path_holders[key]

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
        # Every client this node let into a tenant is checked again: connected ones, and the ones
        # told a mapped file's path, which they keep after they disconnect.
        let_in: dict[str, set[str]] = {}
        for conn in self.conns.values():
            for tenant, session in conn.sessions.items():
                let_in.setdefault(tenant, set()).add(session.client_id)
        for (tenant, _), told in self.path_holders.items():
            let_in.setdefault(tenant, set()).update(told)
        for tenant, clients in let_in.items():
            if tenant != SERVER and clients and self.catalog.has_tenant(tenant):  # a deleted one goes whole
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
            key = self.needs_fetch(conn, msg)
            if key is not None:
                self.fetch_first(conn, key, env)
                return
        super().serve(conn, msg, env)

    def needs_fetch(self, conn: ClientConn, msg: Message) -> tuple[str, str] | None:
        """A service `msg` names that this node must fetch from a holder before serving it.

        None for a request that will be refused anyway (no session, a bad token): an anonymous
        connection must not make the node fetch, and keep a file of, whatever the catalog names."""
        if type(msg) is Resume:  # one request, many services: fetched one at a time
            client = self._resumer(msg.token)
            if client is None:
                return None
            for sv in msg.last_seen[:self.config.max_names]:
                if type(sv.tenant) is str and Permission.VARIABLE_READ in self.permissions_of(client, sv.tenant):
                    key = self._missing(sv.tenant, sv.service)
                    if key is not None:
                        return key
            return None
        tenant = getattr(msg, "tenant", None)
        if type(tenant) is not str or (tenant, getattr(msg, "service", None)) in self.open_services:
            return None  # the usual case, once per request: served here already
        session = conn.sessions.get(tenant)
        if session is None or not session.open or self.ctx.now() >= session.expires_at:
            return None
        return self._missing(tenant, getattr(msg, "service", None))

    def _resumer(self, token: object) -> str | None:
        """The client a Resume's token would reopen sessions for, or None (it will be refused)."""
        if type(token) is not str:
            return None
        try:
            claims = self.signer.verify(token, self.ctx.now())
        except RemoteProtocolError:
            return None
        return None if self.catalog.token_revoked(claims.token_id) else claims.client_id

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
