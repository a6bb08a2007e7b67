"""Draining a node: its clients move to other nodes first, then it leaves the cluster.

`DrainNode(node_id)` (a server admin's request, `commy admin drain NODE`) is served by any node of
a cluster: for another node it is forwarded as `DrainRequest` to that node's hub. The drained hub
refuses new sessions (`unavailable`), sends each connected client `ClientMigration` naming a target
-- the live peer with the fewest clients by the `LoadReport`s every hub sends each second, counting
the clients it has already sent there, and never a peer that drains too -- and waits for
`ClientMigrationAck` and the connection to close. A
client still connected after `drain_timeout` is closed (it reconnects on its own and resumes
elsewhere). Then the hub asks its membership actor to announce the leave: the peers mark the node
LEFT, placement no longer counts it, and the other holders of its services take over (new
replicas pull state through anti-entropy). Every migration is reported to the failover manager
(`MigrationRecorded`) with its outcome.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from commy.core.actor import handles
from commy.core.cluster_ops import ClusterOps
from commy.core.failover import FAILOVER
from commy.core.members import MEMBERSHIP
from commy.core.sessions import ClientConn
from commy.errors import BAD_REQUEST, NOT_FOUND, UNAVAILABLE, LocalProtocolError, RemoteProtocolError
from commy.messages import (
    Address,
    AdminDone,
    Authenticate,
    ClientMigration,
    ClientMigrationAck,
    DrainNode,
    DrainRequest,
    Envelope,
    Leave,
    LoadReport,
    LoadTick,
    MemberInfo,
    MemberUp,
    Message,
    MigrationReason,
    MigrationRecorded,
    Resume,
)

_NEW_SESSIONS = frozenset({Authenticate, Resume})
LOAD_INTERVAL = 1.0
DRAIN_TIMEOUT = 10.0
DRAINING_LOAD = 1 << 30  # the load recorded for a peer that reports it drains: never a target


class DrainState(enum.Enum):
    SERVING = "serving"
    DRAINING = "draining"  # moving its clients away; new sessions refused
    RETIRED = "retired"  # every client gone, the leave announced


DRAIN_TRANSITIONS = {DrainState.SERVING: {DrainState.DRAINING}, DrainState.DRAINING: {DrainState.RETIRED},
                     DrainState.RETIRED: set()}


@dataclass
class Moving:
    """A client asked to move: where to, and since when."""

    session_id: str
    client_id: str
    target: str
    since: float
    acked: bool = False


class DrainOps(ClusterOps):
    """Mixin of `ClientHub`: load reports, drains, and the record of each migration."""

    REQUESTS = {DrainNode: "drain_node", ClientMigrationAck: "client_migration_ack"}

    members: dict[str, MemberInfo]
    loads: dict[str, int]
    drain_state: DrainState
    moving: dict[str, Moving]  # conn id -> its migration
    drain_started: float

    @property
    def draining(self) -> bool:
        return self.drain_state is not DrainState.SERVING

    def move_drain(self, new: DrainState) -> None:
        if new not in DRAIN_TRANSITIONS[self.drain_state]:
            raise LocalProtocolError(f"drain: no transition {self.drain_state.name} -> {new.name}")
        self.drain_state = new
        self.ctx.log.warning("drain_state", state=new.value, clients=len(self.conns))

    # ---- load reports

    @handles(MemberUp)
    def _member_up(self, msg: MemberUp, env: Envelope) -> None:
        self.members[msg.member.node_id] = msg.member

    @handles(LoadReport)
    def _load(self, msg: LoadReport, env: Envelope) -> None:
        self.loads[env.sender.node] = DRAINING_LOAD if msg.draining else msg.clients

    @handles(LoadTick)
    def _load_tick(self, msg: LoadTick, env: Envelope) -> None:
        self.ctx.set_timer(LOAD_INTERVAL, LoadTick())
        report = LoadReport(len(self.conns), self.draining)
        for peer in sorted(self.live_peers):
            self.ctx.send(Address(peer, self.ctx.address.name), report)
        if self.drain_state is DrainState.DRAINING:
            self._check_drain()

    # ---- the request

    def drain_node(self, conn: ClientConn, msg: DrainNode, env: Envelope) -> None:
        admin = self.require_server_admin(conn)
        if self.cluster is None:  # no peer to move clients to, no membership to leave
            raise RemoteProtocolError("this server is not part of a cluster: there is nowhere to move its clients",
                                      BAD_REQUEST)
        me = self.ctx.address.node
        if msg.node_id == me:
            # Answered first: the requester's own connection is one of those told to move.
            clients = sum(1 for c in self.conns.values() if any(s.open for s in c.sessions.values()))
            self.ctx.reply(env, AdminDone("drain", f"{me}: moving {clients} client(s), then leaving"))
            self.start_drain(admin)
            return
        if msg.node_id not in self.members and msg.node_id not in self.live_peers:
            raise RemoteProtocolError(f"no cluster member named {msg.node_id[:64]!r}", NOT_FOUND)
        if msg.node_id not in self.live_peers:
            raise RemoteProtocolError(f"node {msg.node_id!r} is not reachable from {me}", UNAVAILABLE)
        self.ctx.send(Address(msg.node_id, self.ctx.address.name), DrainRequest(msg.node_id, admin))
        self.ctx.reply(env, AdminDone("drain", f"asked {msg.node_id} to drain"))

    @handles(DrainRequest)
    def _drain_request(self, msg: DrainRequest, env: Envelope) -> None:
        if msg.node_id == self.ctx.address.node:
            self.start_drain(msg.requested_by)

    # ---- the drain

    def start_drain(self, requested_by: str) -> None:
        if self.draining:
            return
        self.drain_started = self.ctx.now()
        self.ctx.log.warning("drain_requested", requested_by=requested_by)
        self.move_drain(DrainState.DRAINING)
        planned: dict[str, int] = {}
        for conn in list(self.conns.values()):
            session = next((s for s in conn.sessions.values() if s.open), None)
            target = self._least_loaded(planned)
            if session is None or target is None:
                continue  # no session to move, or nowhere to go: closed at the end of the drain
            planned[target] = planned.get(target, 0) + 1
            info = self.members.get(target)
            self.moving[conn.conn_id] = Moving(session.session_id, session.client_id, target, self.drain_started)
            self.ctx.send(conn.address, ClientMigration(session.session_id, session.client_id, target,
                                                        info.client_url if info is not None else "",
                                                        MigrationReason.DRAINING))
        self._check_drain()

    def _least_loaded(self, planned: dict[str, int]) -> str | None:
        choices = [p for p in self.live_peers if p in self.members and self.members[p].client_url
                   and self.loads.get(p, 0) < DRAINING_LOAD]
        if not choices:
            return None
        return min(choices, key=lambda p: (self.loads.get(p, 0) + planned.get(p, 0), p))

    def client_migration_ack(self, conn: ClientConn, msg: ClientMigrationAck, env: Envelope) -> None:
        moving = self.moving.get(conn.conn_id)
        if moving is None or moving.session_id != msg.session_id:
            self.ctx.log.info("client_migration_acked", conn=conn.conn_id, session=msg.session_id,
                              accepted=msg.accepted)
            return
        moving.acked = msg.accepted
        if not msg.accepted:
            self._record(conn.conn_id, moving, "refused")
            del self.moving[conn.conn_id]

    def migration_gone(self, conn_id: str) -> None:
        """The connection of a client being moved closed (called by the hub on ClientDisconnected)."""
        moving = self.moving.pop(conn_id, None)
        if moving is not None:
            self._record(conn_id, moving, "moved" if moving.acked else "closed")
        if self.drain_state is DrainState.DRAINING:
            self._check_drain()

    def _check_drain(self) -> None:
        now = self.ctx.now()
        if self.conns and now - self.drain_started < DRAIN_TIMEOUT:
            return
        for conn in list(self.conns.values()):  # out of time: they reconnect on their own
            moving = self.moving.pop(conn.conn_id, None)
            if moving is not None:
                self._record(conn.conn_id, moving, "closed")
            self.drop(conn, UNAVAILABLE, "this node is draining: connect to another node")
        if not self.conns:
            self.move_drain(DrainState.RETIRED)
            self.ctx.send(Address(self.ctx.address.node, MEMBERSHIP), Leave())

    def _record(self, conn_id: str, moving: Moving, outcome: str) -> None:
        self.ctx.log.info("client_migrated", conn=conn_id, client=moving.client_id, target=moving.target,
                          outcome=outcome)
        self.ctx.send(Address(self.ctx.address.node, FAILOVER), MigrationRecorded(
            moving.session_id, moving.client_id, self.ctx.address.node, moving.target, "draining", outcome,
            self.ctx.now()))

    def serve(self, conn: ClientConn, msg: Message, env: Envelope) -> None:
        if self.drain_state is not DrainState.SERVING and type(msg) in _NEW_SESSIONS:
            self.refuse(conn, env, UNAVAILABLE, "this node is draining: connect to another node")
            return
        super().serve(conn, msg, env)

