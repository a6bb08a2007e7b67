"""The client hub's shared state and the helpers every group of operations uses.

`HubBase` declares what the hub holds (connections, subscriptions, writer slots, lockouts, the
catalog and the store) and the checks every operation starts with: which session a request acts
in (`session_for`), whether it holds a permission (`require`), who is a server admin, and how a
session or a connection ends. The operation mixins (`AuthOps`, `VariableOps`, `AdminOps`) build on
it and `ClientHub` (`commy.core.clients`) puts them together as one actor.

Two caches keep the per-request checks cheap without skipping any. A session's permissions are
computed once per catalog *epoch* (bumped by `catalog_changed`, which every catalog change goes
through), and `require` checks an active, up-to-date session with one dict hit and one set test.
`open_services` maps (tenant, service) to the service file's handle and the variable names known
to be in it, for services the catalog had at this epoch: `catalog_changed` empties it (a service
deleted, a tenant removed) and rotating a file drops its entry, so a hit always means the names
were valid, the service exists and the handle is its current file.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from commy.core.actor import Actor
from commy.core.auth import Lockout, TokenSigner
from commy.core.catalog import Catalog
from commy.core.hlc import HybridClock
from commy.core.permissions import Permission
from commy.core.replica_state import CONCERNS
from commy.core.sessions import ClientConn, Session, SessionState, WriterSlots
from commy.core.store_api import ServiceHandle, ServiceStore
from commy.core.subscriptions import SubscriptionIndex
from commy.errors import BAD_REQUEST, EXPIRED, FORBIDDEN, INTERNAL, UNAUTHENTICATED, RemoteProtocolError
from commy.messages import (
    Address,
    CatalogChanged,
    CloseClient,
    Envelope,
    Error,
    LocalPollTick,
    Message,
    PermissionRevoked,
)
from commy.messages.client import SERVER

ACTIVE = SessionState.ACTIVE


@dataclass(frozen=True, slots=True)
class HubConfig:
    heartbeat_timeout: float = 60.0  # a client silent this long is dropped
    sweep_interval: float = 1.0
    token_ttl: float = 3600.0
    max_failures: int = 5  # failed logins per key before it locks ...
    lockout_window: float = 300.0  # ... within this window
    lockout_for: float = 300.0  # ... for this long; a source address gets ten times the tries
    local_poll: float = 0.001  # how often mapped files are checked for local writes
    delegated_timeout: float = 10.0
    max_names: int = 10_000  # variables per request
    max_sessions: int = 64  # tenants per connection
    max_bad_requests: int = 100  # refused requests before the connection is closed
    anonymous_timeout: float = 60.0  # a connection with no session for this long is dropped
    max_reply_bytes: int = 64 << 20  # values in one reply (a Get or a Subscribe's current state)
    max_value: int = 16 << 20  # bytes per variable value
    max_services: int = 1000  # services per tenant
    max_subscribed: int = 10_000  # subscribed names per connection
    max_parked: int = 1000  # requests waiting behind a delegated login
    tokens_per_minute: int = 60  # issued to one client: each may be revoked, and revocations are kept

    def __post_init__(self) -> None:
        for name in ("heartbeat_timeout", "sweep_interval", "token_ttl", "lockout_window", "lockout_for",
                     "local_poll", "delegated_timeout", "anonymous_timeout"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise ValueError(f"clients.{name} must be a finite number > 0, got {value!r}")
        for name in ("max_failures", "max_names", "max_sessions", "max_bad_requests", "max_reply_bytes",
                     "max_value", "max_services", "max_subscribed", "max_parked", "tokens_per_minute"):
            if getattr(self, name) < 1:
                raise ValueError(f"clients.{name} must be >= 1")


@dataclass(frozen=True, slots=True)
class HubCluster:
    """How the hub takes part in a cluster."""

    clock: HybridClock
    replicator: str = "replicator"
    replication_factor: int = 2
    cluster_size: int = 1
    default_concern: str = "local"
    session_sync: str | None = None  # the node's session-sync actor (None: resume from what the client says)

    def __post_init__(self) -> None:
        if self.default_concern not in CONCERNS:
            raise ValueError(f"cluster.write_concern must be one of {CONCERNS}, got {self.default_concern!r}")
        if not 1 <= self.replication_factor <= max(1, self.cluster_size):
            raise ValueError(f"cluster.replication_factor must be 1..{self.cluster_size}, got "
                             f"{self.replication_factor}")


class HubBase(Actor):
    """State and shared checks of the client hub (see `commy.core.clients.ClientHub`)."""

    REQUESTS: ClassVar[dict[type[Message], str]] = {}  # request type -> method name, per mixin

    catalog: Catalog
    store: ServiceStore
    signer: TokenSigner
    entropy: Callable[[int], bytes]
    config: HubConfig
    auth_hooks: str | None
    conns: dict[str, ClientConn]
    subs: SubscriptionIndex
    key_lockout: Lockout
    peer_lockout: Lockout
    token_limiter: Lockout
    path_holders: dict[tuple[str, str], set[str]]
    epoch: int
    open_services: dict[tuple[str, str], tuple[ServiceHandle, set[str]]]
    slots: dict[tuple[str, str], WriterSlots]
    seen: dict[tuple[str, str], dict[str, int]]
    marks: dict[tuple[str, str], int]
    last_writer: dict[tuple[str, str, str], str]
    pending_auth: dict[str, tuple[str, Envelope]]
    stats: dict[str, int]
    OPS: dict[type[Message], Any]
    clock: HybridClock
    cluster: HubCluster | None
    replicator: Address | None  # the node's replicator, in a cluster
    live_peers: set[str]  # peers the heartbeat monitor sees healthy or suspected
    ensuring: dict[tuple[str, str], list[str]]  # service being fetched from a holder -> connections waiting
    poll_timer: Any

    # ---- checks

    def session_for(self, conn: ClientConn, tenant: str) -> Session:
        """The open session `conn` holds on `tenant`, with its permissions brought up to date."""
        session = conn.session(tenant) if type(tenant) is str else None
        if session is None:
            what = "the server" if tenant == SERVER else f"tenant {str(tenant)[:64]!r}"
            raise RemoteProtocolError(f"not authenticated on {what}: send Authenticate first", UNAUTHENTICATED)
        if self.ctx.now() >= session.expires_at:
            self.end_session(conn, tenant, SessionState.CLOSED, notify="token expired")
            raise RemoteProtocolError("the session's token expired: authenticate again", EXPIRED)
        if session.epoch != self.epoch:
            session.permissions = self.permissions_of(session.client_id, tenant)
            session.epoch = self.epoch
        return session

    def permissions_of(self, client_id: str, tenant: str) -> frozenset[Permission]:
        if tenant == SERVER:
            return frozenset(Permission) if self.catalog.is_server_admin(client_id) else frozenset()
        return self.catalog.permissions(client_id, tenant)

    def require(self, conn: ClientConn, tenant: str, *perms: Permission) -> Session:
        """The session `session_for` gives, if it holds every one of `perms`; else `forbidden`."""
        session = conn.sessions.get(tenant) if type(tenant) is str else None
        if (session is None or session.state is not ACTIVE or session.epoch != self.epoch
                or self.ctx.now() >= session.expires_at):
            session = self.session_for(conn, tenant)  # the rest: none, migrating, permissions stale
        held = session.permissions
        for p in perms:
            if p not in held:
                missing = [q.value for q in perms if q not in held]
                raise RemoteProtocolError(f"client {session.client_id!r} lacks {', '.join(missing)} on tenant "
                                          f"{tenant!r}", FORBIDDEN)
        return session

    def require_server_admin(self, conn: ClientConn) -> str:
        """The client id of a server admin holding a session on `conn`, else an error."""
        open_sessions = [s for s in conn.sessions.values() if s.open]
        if not open_sessions:
            raise RemoteProtocolError("not authenticated: send Authenticate first", UNAUTHENTICATED)
        for session in open_sessions:
            if self.catalog.is_server_admin(session.client_id):
                return session.client_id
        raise RemoteProtocolError("this operation needs a server admin's key", FORBIDDEN)

    def tenant_admin(self, conn: ClientConn, tenant: str) -> str:
        """The client id allowed to administer `tenant` (a tenant admin or a server admin)."""
        for session in conn.sessions.values():
            if session.open and self.catalog.is_server_admin(session.client_id):
                return session.client_id
        return self.require(conn, tenant, Permission.TENANT_ADMIN).client_id

    def check_count(self, what: str, items: tuple[object, ...]) -> None:
        if len(items) > self.config.max_names:
            raise RemoteProtocolError(f"too many {what}: {len(items)} > {self.config.max_names}", BAD_REQUEST)

    def park(self, conn: ClientConn) -> None:
        """Hold `conn`'s next requests until `ClientHub.unpark` (a delegated login is pending)."""
        conn.parked = deque()

    def serve(self, conn: ClientConn, msg: Message, env: Envelope) -> None:
        self.stats["requests"] += 1
        try:
            self.OPS[type(msg)](self, conn, msg, env)
        except RemoteProtocolError as exc:
            self.refuse(conn, env, exc.code, exc.detail)
        except Exception:  # our bug: still answer, then let the node log it (or raise, when strict)
            self.open_services.clear()  # a half-done operation may have left a cached handle stale
            self.refuse(conn, env, INTERNAL, f"internal error handling {type(msg).__name__}")
            raise

    def unpark(self, conn: ClientConn) -> None:
        """Answer what arrived while an authentication was pending, in order."""
        queue, conn.parked = conn.parked, None
        while queue and conn.parked is None and conn.conn_id in self.conns:
            env = queue.popleft()
            try:
                self.serve(conn, env.body, env)
            except Exception as exc:  # answered `internal` already; the requests behind it still get theirs
                self.ctx.log.error("request_failed", request=type(env.body).__name__, error=repr(exc))
        if queue and conn.parked is not None:  # a parked request parked the connection again
            conn.parked.extend(queue)  # after what parked it (a request waiting for its service is its head)

    def ensure_polling(self) -> None:
        """Keep the local-write poll running while any service file is mapped."""
        if self.poll_timer is None and self.slots:
            self.poll_timer = self.ctx.set_timer(self.config.local_poll, LocalPollTick())

    def release_mapping(self, conn: ClientConn, key: tuple[str, str]) -> None:
        slot = conn.mapped.pop(key, None)
        slots = self.slots.get(key)
        if slot is None or slots is None:
            return
        slots.release(slot)
        if not slots.owners:
            del self.slots[key]
            self.seen.pop(key, None)
            self.marks.pop(key, None)

    def drop(self, conn: ClientConn, code: str, detail: str) -> None:
        """Close a connection from this side (the gateway sends the Error, then closes)."""
        self.stats["dropped"] += 1
        self.ctx.log.info("client_dropped", conn=conn.conn_id, code=code, detail=detail)
        self.ctx.send(conn.address, CloseClient(code, detail))
        self.forget(conn, SessionState.CLOSED)

    def forget(self, conn: ClientConn, final: SessionState) -> None:
        for tenant in list(conn.sessions):
            self.end_session(conn, tenant, final, notify=None)
        self.subs.drop_conn(conn.conn_id)
        self.conns.pop(conn.conn_id, None)
        for ref in [r for r, (c, _) in self.pending_auth.items() if c == conn.conn_id]:
            del self.pending_auth[ref]

    def end_session(self, conn: ClientConn, tenant: str, final: SessionState, notify: str | None) -> None:
        """End `conn`'s session on `tenant`: unmap, unsubscribe, optionally tell it why."""
        session = conn.sessions.pop(tenant, None)
        if session is None:
            return
        if session.open:
            session.move(final)
        for key in [k for k in conn.mapped if k[0] == tenant]:
            self.release_mapping(conn, key)
        self.subs.drop_conn(conn.conn_id, tenant)
        if notify is not None:
            self.ctx.send(conn.address, PermissionRevoked(tenant, notify))

    def refuse(self, conn: ClientConn, env: Envelope, code: str, detail: str) -> None:
        self.stats["errors"] += 1
        self.ctx.reply(env, Error(code, detail))
        conn.bad_requests += 1
        if conn.bad_requests > self.config.max_bad_requests and conn.conn_id in self.conns:
            self.drop(conn, BAD_REQUEST, f"more than {self.config.max_bad_requests} refused requests")

    def catalog_changed(self) -> None:
        self.epoch += 1
        self.open_services.clear()
        self.ctx.publish(CatalogChanged(self.catalog.snapshot()))
