"""Simulated clients: they speak the client protocol to the nodes and remember everything.

A `SimClient` follows its `ClientSpec`: it dials the first node of its server list, authenticates
with its API key, subscribes to some variables of one service and, if it is a writer, sets one
variable every `write_interval` (jittered) with its write concern -- one write in flight at a time.
Everything it hears is recorded: each acknowledged write with its stamp and concern, each write
whose outcome it never learned, each value it received (event, resume or subscription) in order.
A client given `intrude` also tries, now and then, to log in to, read, subscribe to or write that
other tenant with its own key: every such request must be refused (the checkers watch the answers).

Failover: when its connection drops (the node crashed: a reset) or a request goes unanswered for
`request_timeout` (the node froze), it dials the next node of its list and sends `Resume(session,
token, last seen versions and stamps of the variables it follows)`, which must give it back its
session and subscriptions and every change it missed (`resubscribe` makes it subscribe again
anyway), and carries on. The time from losing the connection to the
`ResumeResponse` is a failover time. A refused login or resume for lack of rights, or a
`PermissionRevoked`, ends its work on the tenant; the connection stays open so checkers can see
that nothing more arrives. `ClientMigration` (a drain) is acknowledged and followed.

Clients run on the cluster's scheduler, draw their jitter from their own stream and record their
notable moments in the trace under their name, so a run stays deterministic and replayable.
`sim.admin_client.AdminClient` is the same machinery with a script of admin requests instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from commy.errors import EXPIRED, FORBIDDEN, NOT_FOUND, OUTCOME_UNKNOWN, UNAUTHENTICATED, UNAVAILABLE
from commy.messages import (
    Authenticate,
    AuthenticationResponse,
    ClientMigration,
    ClientMigrationAck,
    Error,
    GetVariables,
    Heartbeat,
    Logout,
    LogoutResponse,
    Message,
    NamedValue,
    PermissionRevoked,
    Resume,
    ResumeResponse,
    ServiceVersions,
    SetVariables,
    Subscribe,
    SubscriptionAck,
    VariableChanged,
    VariablesData,
    VariablesUpdated,
    VariableVersion,
)
from sim.client_net import ClientNetwork, SimConnection

if TYPE_CHECKING:
    from sim.scheduler import Scheduler

REFUSED_FOR_GOOD = frozenset({UNAUTHENTICATED, FORBIDDEN, EXPIRED})
DATA = (VariableChanged, VariablesData, SubscriptionAck, ResumeResponse, VariablesUpdated, AuthenticationResponse)
"""Replies and events that carry a tenant's data or open it (what an intruder must never get)."""


@dataclass(frozen=True)
class ClientSpec:
    name: str  # trace name and connection-id prefix, e.g. "c3"
    client_id: str
    key: str
    tenant: str
    service: str
    servers: tuple[str, ...]  # nodes in the order the client tries them
    subscribe: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()  # variables it writes (empty: a reader)
    write_interval: float = 0.1
    concern: str = "replicated"
    start_at: float = 0.0
    request_timeout: float = 4.0  # longer than the write timeout: a live server always answers by then
    heartbeat_interval: float = 5.0
    reconnect_delay: float = 0.05
    value_size: int = 0  # values padded to this many bytes
    resubscribe: bool = False  # subscribe again after a Resume (the hub restores the subscriptions itself)
    intrude: str = ""  # another tenant it tries, now and then, to read, subscribe to or write (and must not)
    intrude_every: float = 1.0


@dataclass(frozen=True)
class AckedWrite:
    name: str
    value: bytes
    stamp: int
    concern: str
    node: str
    sent_at: float
    acked_at: float


@dataclass(frozen=True)
class Received:
    at: float
    kind: str  # "event", "missed" (in a ResumeResponse) or "current" (in a SubscriptionAck)
    tenant: str
    name: str
    value: bytes
    stamp: int
    node: str
    conn: str


@dataclass
class Failover:
    lost_at: float
    from_node: str
    resumed_at: float | None = None
    to_node: str = ""


@dataclass
class Pending:
    msg: Message
    sent_at: float


class SimClient:
    """One client application: a connection at a time, a session, a steady write load."""

    def __init__(self, spec: ClientSpec, net: ClientNetwork, rng: random.Random, peer: str) -> None:
        if not spec.servers:
            raise ValueError(f"client {spec.name} has no server to connect to")
        self.spec = spec
        self.name = spec.name
        self.net = net
        self.rng = rng
        self.peer = peer
        self.conn: SimConnection | None = None
        self.phase = "idle"  # idle, connecting, login, resume, subscribe, ready, revoked, logged_out, stopped
        self.server = -1  # index in spec.servers of the node dialled last
        self.token = ""
        self.session_id = ""
        self.sessions: set[str] = set()
        self.writing = True  # cleared when the run stops its load (before the quiesce phase)
        self._rid = 0
        self._conns = 0
        self._seq = 0
        self._pending: dict[int, Pending] = {}
        self._write_rid = 0
        self._last_beat = 0.0
        self._logout_at: float | None = None
        self._unsubscribed = False  # its Subscribe found no service yet: subscribe after its first write
        self._next_intrusion = spec.start_at + spec.intrude_every
        self.intrusions = 0
        # What it saw and did, for the checkers.
        self.acked: list[AckedWrite] = []
        self.unknown: list[tuple[str, bytes, float, str]] = []  # (name, value, sent at, why)
        self.refused: list[tuple[float, str]] = []
        self.errors: list[tuple[float, str, str, str, str]] = []  # (time, request, code, detail, node)
        self.received: list[Received] = []
        self.view: dict[str, Received] = {}  # per variable: the last value received
        self.failovers: list[Failover] = []
        self.revoked_at: float | None = None
        self.logged_out_at: float | None = None
        self.resumes = 0

    @property
    def sched(self) -> Scheduler:
        return self.net.cluster.sched

    @property
    def now(self) -> float:
        return self.net.cluster.now

    def record(self, event: str, detail: Any = None) -> None:
        self.net.record(self.name, event, detail)

    # ---- lifecycle

    def start(self) -> None:
        self.sched.at(self.sched.epoch + self.spec.start_at, self._begin)

    def _begin(self, _: Any) -> None:
        self._dial_next()
        self._arm_tick()

    def stop_writing(self) -> None:
        self.writing = False

    @property
    def node(self) -> str:
        return self.spec.servers[self.server] if self.server >= 0 else ""

    def _dial_next(self) -> None:
        if self.phase in ("revoked", "logged_out", "stopped"):
            return
        self.server = (self.server + 1) % len(self.spec.servers)
        self._conns += 1
        self.phase = "connecting"
        self.conn = self.net.connect(self, self.node, f"{self.name}.{self._conns}", self.peer)

    def _redial(self, _: Any = None) -> None:
        if self.conn is None:
            self._dial_next()

    def _arm_tick(self) -> None:
        interval = self.spec.write_interval if self.spec.writes else 0.25
        self.sched.after(interval * self.rng.uniform(0.5, 1.5), self._tick)

    def _tick(self, _: Any) -> None:
        if self.phase == "stopped":
            return
        self._arm_tick()
        now = self.now
        stale = [p for p in self._pending.values() if now - p.sent_at > self.spec.request_timeout]
        if stale and self.conn is not None:
            self.record("c:timeout", (self.node, type(stale[0].msg).__name__))
            conn, self.conn = self.conn, None
            conn.close()
            self._lost(f"no answer for {self.spec.request_timeout:g} s")
            return
        if self.phase != "ready":
            return
        if self._logout_at is not None and now >= self._logout_at:
            self._logout_at = None
            self.send(Logout(self.spec.tenant))
            return
        if self.spec.intrude and now >= self._next_intrusion and self.writing:
            self._next_intrusion = now + self.spec.intrude_every
            self._intrude()
        elif self.spec.writes and self.writing and not self._write_rid:
            self._write()
        elif now - self._last_beat > self.spec.heartbeat_interval:
            self._last_beat = now
            self.send(Heartbeat(now))

    def logout_at(self, t: float) -> None:
        """Log out (the token is revoked everywhere) at the first tick after `t` seconds."""
        self._logout_at = t

    # ---- requests

    def send(self, msg: Message) -> int:
        assert self.conn is not None
        self._rid += 1
        self._pending[self._rid] = Pending(msg, self.now)
        self.conn.send(self._rid, msg)
        return self._rid

    def _write(self) -> None:
        spec = self.spec
        name = self.rng.choice(spec.writes)
        self._seq += 1
        value = f"{self.name}:{self._seq}".encode().ljust(spec.value_size, b".")
        self._write_rid = self.send(SetVariables(spec.tenant, spec.service, (NamedValue(name, value),),
                                                 spec.concern))

    def _intrude(self) -> None:
        """A request on a tenant this client has no rights on: it must be refused."""
        spec, self.intrusions = self.spec, self.intrusions + 1
        other, names = spec.intrude, spec.subscribe or ("v0",)
        choice = self.intrusions % 4
        if choice == 0:
            self.send(Authenticate(other, "api_key", spec.key))  # its own key, where it has no grant
        elif choice == 1:
            self.send(GetVariables(other, spec.service, ()))
        elif choice == 2:
            self.send(Subscribe(other, spec.service, names))
        else:
            value = f"{self.name}:intrusion{self.intrusions}".encode()
            self.send(SetVariables(other, spec.service, (NamedValue(names[0], value),), spec.concern))

    def _subscribe(self) -> None:
        if self.spec.subscribe:
            self.phase = "subscribe"
            self.send(Subscribe(self.spec.tenant, self.spec.service, self.spec.subscribe))
        else:
            self.phase = "ready"

    # ---- the connection (ClientEnd)

    def on_open(self, conn: SimConnection) -> None:
        if conn is not self.conn:
            return
        if not self.token:
            self.phase = "login"
            self.send(Authenticate(self.spec.tenant, "api_key", self.spec.key))
        else:
            self.phase = "resume"
            self.send(Resume(self.session_id, self.token, (self._last_seen(),)))

    def _last_seen(self) -> ServiceVersions:
        """Every variable it follows, with the stamp of the value it last got (0: none yet)."""
        names = sorted(set(self.spec.subscribe) | set(self.view))
        versions = tuple(VariableVersion(n, 0, self.view[n].stamp if n in self.view else 0) for n in names)
        return ServiceVersions(self.spec.tenant, self.spec.service, versions)

    def on_closed(self, conn: SimConnection, reason: str) -> None:
        if conn is not self.conn:
            return
        self.conn = None
        self._lost(reason)

    def _lost(self, reason: str) -> None:
        """The connection is gone: whatever was in flight has an unknown outcome; try the next node."""
        for rid, pending in sorted(self._pending.items()):
            if rid == self._write_rid:
                nv = pending.msg.variables[0]  # type: ignore[attr-defined]
                self.unknown.append((nv.name, nv.value, pending.sent_at, reason))
        self._pending.clear()
        self._write_rid = 0
        if self.sessions and (not self.failovers or self.failovers[-1].resumed_at is not None):
            self.failovers.append(Failover(self.now, self.node))
        self.sessions.clear()  # the server side of them is gone with the connection
        self.record("c:lost", (self.node, reason))
        if self.phase in ("revoked", "logged_out", "stopped"):
            return
        self.phase = "idle"
        self.sched.after(self.spec.reconnect_delay * self.rng.uniform(1.0, 2.0), self._redial)

    def on_message(self, conn: SimConnection, request_id: int, msg: Message) -> None:
        if conn is not self.conn:
            return
        if not request_id:
            self._event(msg)
            return
        pending = self._pending.pop(request_id, None)
        if pending is None:
            self.record("c:unexpected", (request_id, type(msg).__name__))
            return
        tenant = getattr(pending.msg, "tenant", self.spec.tenant)
        if tenant != self.spec.tenant:  # an intrusion: record what came back, nothing else
            what = f"Error:{msg.code}" if type(msg) is Error else type(msg).__name__
            self.record("c:data" if type(msg) in DATA else "c:intrusion", (tenant, what))
            return
        if type(msg) is Error:
            self._error(pending, request_id, msg)
        else:
            self._reply(pending, request_id, msg)

    # ---- what the server says

    def _event(self, msg: Message) -> None:
        if type(msg) is VariableChanged:
            self._received("event", msg.tenant, msg.name, msg.value, msg.stamp)
        elif type(msg) is PermissionRevoked:
            self.sessions.discard(msg.tenant)
            self.revoked_at = self.now
            self.phase = "revoked"
            self.record("c:revoked", (msg.tenant, msg.reason))
        elif type(msg) is ClientMigration:
            self.send(ClientMigrationAck(msg.session_id, True, ""))
            self.record("c:migrate", (self.node, msg.target_node))
            if msg.target_node in self.spec.servers and self.conn is not None:
                conn, self.conn = self.conn, None
                conn.close()
                self._lost("migrated")
                self.server = self.spec.servers.index(msg.target_node) - 1  # the redial goes there
        elif type(msg) is Error:  # the server's last word before it closes the connection
            self.errors.append((self.now, "", msg.code, msg.detail, self.node))
            self.record("c:event", ("Error", msg.code))
        else:
            self.record("c:event", type(msg).__name__)

    def _received(self, kind: str, tenant: str, name: str, value: bytes, stamp: int) -> None:
        conn = self.conn.conn_id if self.conn is not None else ""
        got = Received(self.now, kind, tenant, name, value, stamp, self.node, conn)
        self.received.append(got)
        self.record("c:recv", (kind, tenant, name, stamp))
        if tenant == self.spec.tenant:  # another tenant's (a leak the checkers report) is no value of ours
            self.view[name] = got  # what the client believes now: the last value it was told

    def _reply(self, pending: Pending, rid: int, msg: Message) -> None:
        spec = self.spec
        if type(msg) is VariablesUpdated:
            self._write_rid = 0 if rid == self._write_rid else self._write_rid
            if self._unsubscribed:
                self._unsubscribed = False
                self._subscribe()
            self.record("c:data", (msg.tenant, "VariablesUpdated"))
            sent = pending.msg.variables  # type: ignore[attr-defined]
            values = {nv.name: nv.value for nv in sent}
            for v in msg.versions:
                self.acked.append(AckedWrite(v.name, values[v.name], v.stamp, spec.concern, self.node,
                                             pending.sent_at, self.now))
                self.record("c:ack", (v.name, v.stamp, spec.concern))
        elif type(msg) is AuthenticationResponse:
            self.token, self.session_id = msg.token, msg.session_id
            self.sessions.add(msg.tenant)
            self.record("c:auth", (self.node, msg.tenant))
            self._subscribe()
        elif type(msg) is ResumeResponse:
            self.sessions.update(msg.tenants)
            self.resumes += 1
            if self.failovers and self.failovers[-1].resumed_at is None:
                self.failovers[-1].resumed_at, self.failovers[-1].to_node = self.now, self.node
            self.record("c:resumed", (self.node, msg.tenants, len(msg.missed)))
            for change in msg.missed:
                self._received("missed", change.tenant, change.name, change.value, change.stamp)
            if self.spec.resubscribe:
                self._subscribe()
            else:
                self.phase = "ready"
        elif type(msg) is SubscriptionAck:
            for cur in msg.current:
                self._received("current", msg.tenant, cur.name, cur.value, cur.stamp)
            self.phase = "ready"
        elif type(msg) is LogoutResponse:
            self.sessions.discard(msg.tenant)
            self.logged_out_at = self.now
            self.phase = "logged_out"
            self.record("c:logged_out", msg.tenant)
        elif type(msg) is VariablesData:
            self.record("c:data", (msg.tenant, "VariablesData"))

    def _error(self, pending: Pending, rid: int, err: Error) -> None:
        request = type(pending.msg).__name__
        self.record("c:error", (request, err.code))
        if type(pending.msg) is SetVariables and rid == self._write_rid:
            self._write_rid = 0
            nv = pending.msg.variables[0]
            if err.code == UNAVAILABLE:
                self.refused.append((self.now, err.code))
            elif err.code == OUTCOME_UNKNOWN:
                self.unknown.append((nv.name, nv.value, pending.sent_at, err.code))
            else:
                self.errors.append((self.now, request, err.code, err.detail, self.node))
            if err.code in REFUSED_FOR_GOOD:
                self._give_up(err)
            return
        self.errors.append((self.now, request, err.code, err.detail, self.node))
        if type(pending.msg) is Subscribe and err.code == NOT_FOUND and self.spec.writes:
            self.phase = "ready"  # the service does not exist yet: its first write creates it, then subscribe
            self._unsubscribed = True
        elif err.code in REFUSED_FOR_GOOD and type(pending.msg) in (Authenticate, Resume, Subscribe):
            self._give_up(err)
        elif type(pending.msg) in (Authenticate, Resume, Subscribe) and self.conn is not None:
            conn, self.conn = self.conn, None  # this node cannot serve us now: try another
            conn.close()
            self._lost(f"{request} refused: {err.code}")

    def _give_up(self, err: Error) -> None:
        self.sessions.clear()
        if self.revoked_at is None:
            self.revoked_at = self.now
        self.phase = "revoked"
        self.record("c:revoked", (self.spec.tenant, err.code))
