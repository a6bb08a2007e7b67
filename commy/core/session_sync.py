"""Session sync: every node keeps a directory of the cluster's client sessions, so a client whose
server fails (or that is asked to move) can `Resume` on any other node (sans-IO actor).

The hub describes the sessions of a connection whenever they change -- a session opened or
resumed, its token refreshed, a subscription added or dropped -- by publishing `SessionsChanged`
(built by `sessions_changed`), and names the sessions that ended for good (a logout). A connection
that merely drops changes nothing: its record is what the client resumes from. The actor stamps
each record with its own hybrid logical clock (`updated_at`: of two records of one session the
higher stamp wins, and stamps seen from peers are observed, so a session that moved to this node
is newer here than what its old node said), keeps it in the directory and pushes it to every live
peer's session sync (`SessionPush`). Pushes are debounced: the first change goes out at once, the
ones after it wait for the `debounce` interval to pass and go out together, so a burst of
subscriptions costs one message per peer per interval.

Peers keep what they are pushed. The directory is bounded (`max_records`; the records whose
tokens expire soonest go first) and a record is forgotten when its token expires. An ended
session is a tombstone until then, so a late push cannot bring it back. A peer that comes up (or
back) gets every record this node knows; every `resync_interval` each node pushes its own records
again, which repairs a push lost on the way. The hub asks for a record with `FindSession` when a
client resumes and gets `SessionFound`; what it then restores is checked against the catalog, not
trusted from the record (see `AuthOps.resume`).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from commy.core.actor import Actor, Context, TimerId, handles
from commy.core.hlc import HybridClock
from commy.core.membership import NOT_GONE
from commy.messages import (
    Address,
    Envelope,
    FindSession,
    MemberLeft,
    MemberUp,
    PeerStateChanged,
    SessionFound,
    SessionPush,
    SessionPushTick,
    SessionRecord,
    SessionResyncTick,
    SessionsChanged,
    SubscriptionRecord,
)

if TYPE_CHECKING:
    from commy.core.hub_base import HubBase
    from commy.core.sessions import ClientConn

SESSION_SYNC = "session-sync"
LIVE_STATES = NOT_GONE


@dataclass(frozen=True, slots=True)
class SessionSyncConfig:
    debounce: float = 0.1  # at most one push per this many seconds
    resync_interval: float = 30.0  # own records pushed again to every live peer
    max_records: int = 100_000  # sessions in the directory
    batch: int = 500  # records per SessionPush
    tombstone_ttl: float = 3600.0  # how long an ended session whose expiry is unknown stays refused

    def __post_init__(self) -> None:
        for name in ("debounce", "resync_interval", "tombstone_ttl"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise ValueError(f"session_sync.{name} must be a finite number > 0, got {value!r}")
        for name in ("max_records", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"session_sync.{name} must be >= 1")


class SessionDirectory:
    """Session records by id, each until its token expires, at most `limit` of them; plus the ids
    of sessions that ended for good (tombstones, until their own expiry)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.records: dict[str, SessionRecord] = {}
        self.ended: dict[str, float] = {}  # session id -> forget the tombstone at
        self._expiry: list[tuple[float, str]] = []  # heap of (expires_at, id); stale entries skipped

    def __len__(self) -> int:
        return len(self.records)

    def get(self, session_id: str, now: float) -> SessionRecord | None:
        rec = self.records.get(session_id)
        return rec if rec is not None and rec.expires_at > now else None

    def is_ended(self, session_id: str) -> bool:
        return session_id in self.ended

    def put(self, rec: SessionRecord, now: float) -> bool:
        """Keep `rec` unless it expired, its session ended, or a newer record of it is here."""
        if rec.expires_at <= now or rec.session_id in self.ended:
            return False
        old = self.records.get(rec.session_id)
        if old is not None and (old.updated_at, old.node) >= (rec.updated_at, rec.node):
            return False
        self.records[rec.session_id] = rec
        heapq.heappush(self._expiry, (rec.expires_at, rec.session_id))
        while len(self.records) > self.limit:  # full: the sessions whose tokens expire soonest go first
            self._pop_soonest()
        return True

    def end(self, session_id: str, until: float) -> None:
        rec = self.records.pop(session_id, None)
        if rec is not None:
            until = max(until, rec.expires_at)
        self.ended[session_id] = max(until, self.ended.get(session_id, until))

    def prune(self, now: float) -> int:
        """Forget expired records and tombstones; returns how many records went."""
        before = len(self.records)
        while self._expiry and self._expiry[0][0] <= now:
            _, sid = heapq.heappop(self._expiry)
            rec = self.records.get(sid)
            if rec is not None and rec.expires_at <= now:
                del self.records[sid]
        for sid in [s for s, until in self.ended.items() if until <= now]:
            del self.ended[sid]
        if len(self._expiry) > 2 * len(self.records) + 64:  # drop the stale heap entries now and then
            self._expiry = [(r.expires_at, s) for s, r in self.records.items()]
            heapq.heapify(self._expiry)
        return before - len(self.records)

    def _pop_soonest(self) -> None:
        while self._expiry:
            expires_at, sid = heapq.heappop(self._expiry)
            rec = self.records.get(sid)
            if rec is not None and rec.expires_at == expires_at:
                del self.records[sid]
                return


class SessionSync(Actor):
    """Keeps this node's session directory and the peers' in step; see the module docstring."""

    def __init__(self, ctx: Context, config: SessionSyncConfig = SessionSyncConfig(), *, index: int = 0,
                 peers: Iterable[str] = ()) -> None:
        super().__init__(ctx)
        self.config = config
        self.me = ctx.address.node
        self.clock = HybridClock(index, ctx.now)  # its own: session stamps never touch write stamps
        self.directory = SessionDirectory(config.max_records)
        self.live: set[str] = set(peers) - {self.me}
        self.dirty: dict[str, SessionRecord] = {}  # changed here since the last push
        self.dirty_ended: set[str] = set()
        self.push_timer: TimerId | None = None  # set while a push is held back (the debounce)
        self.stats = {"pushes": 0, "records_sent": 0, "records_taken": 0, "lookups": 0, "found": 0}

    def started(self) -> None:
        self.ctx.set_timer(self.ctx.rng.uniform(0, self.config.resync_interval), SessionResyncTick())

    # ---- peers

    @handles(MemberUp)
    def _member_up(self, msg: MemberUp, env: Envelope) -> None:
        self.live.discard(msg.member.node_id)  # new, or restarted (a new incarnation): it knows nothing
        self._peer_live(msg.member.node_id)

    @handles(PeerStateChanged)
    def _peer_state(self, msg: PeerStateChanged, env: Envelope) -> None:
        if msg.new in LIVE_STATES:
            self._peer_live(msg.peer)
        else:
            self.live.discard(msg.peer)

    @handles(MemberLeft)
    def _member_left(self, msg: MemberLeft, env: Envelope) -> None:
        self.live.discard(msg.node_id)

    def _peer_live(self, peer: str) -> None:
        if peer == self.me or peer in self.live:
            return
        self.live.add(peer)  # new, or back: it may have missed anything, so it gets everything
        self._send(peer, list(self.directory.records.values()), sorted(self.directory.ended))

    # ---- changes here

    @handles(SessionsChanged)
    def _changed(self, msg: SessionsChanged, env: Envelope) -> None:
        now = self.ctx.now()
        for rec in msg.records:
            stamped = dataclasses.replace(rec, node=self.me, updated_at=self.clock.tick())
            if self.directory.put(stamped, now):
                self.dirty[rec.session_id] = stamped
        for sid in msg.ended:
            self.directory.end(sid, now + self.config.tombstone_ttl)
            self.dirty.pop(sid, None)
            self.dirty_ended.add(sid)
        if self.push_timer is None:
            self._push()
            self.push_timer = self.ctx.set_timer(self.config.debounce, SessionPushTick())

    @handles(SessionPushTick)
    def _push_tick(self, msg: SessionPushTick, env: Envelope) -> None:
        if self.dirty or self.dirty_ended:
            self._push()
            self.push_timer = self.ctx.set_timer(self.config.debounce, SessionPushTick())
        else:
            self.push_timer = None

    def _push(self) -> None:
        records, ended = list(self.dirty.values()), sorted(self.dirty_ended)
        self.dirty, self.dirty_ended = {}, set()
        if records or ended:
            self.stats["pushes"] += 1
            for peer in sorted(self.live):
                self._send(peer, records, ended)

    def _send(self, peer: str, records: list[SessionRecord], ended: list[str]) -> None:
        to, batch = Address(peer, SESSION_SYNC), self.config.batch
        for i in range(0, max(len(records), 1), batch):
            chunk = tuple(records[i:i + batch])
            if chunk or (i == 0 and ended):
                self.ctx.send(to, SessionPush(chunk, tuple(ended) if i == 0 else ()))
                self.stats["records_sent"] += len(chunk)

    # ---- changes from peers

    @handles(SessionPush)
    def _pushed(self, msg: SessionPush, env: Envelope) -> None:
        now = self.ctx.now()
        for rec in msg.records:
            self.clock.observe(rec.updated_at)
            if self.directory.put(rec, now):
                self.stats["records_taken"] += 1
                self.dirty.pop(rec.session_id, None)  # a newer word on it came from elsewhere
        for sid in msg.ended:
            self.directory.end(sid, now + self.config.tombstone_ttl)

    @handles(SessionResyncTick)
    def _resync(self, msg: SessionResyncTick, env: Envelope) -> None:
        self.ctx.set_timer(self.config.resync_interval, SessionResyncTick())
        now = self.ctx.now()
        self.directory.prune(now)
        own = [r for r in self.directory.records.values() if r.node == self.me]
        if own:
            for peer in sorted(self.live):
                self._send(peer, own, [])

    # ---- lookups

    @handles(FindSession)
    def _find(self, msg: FindSession, env: Envelope) -> None:
        self.stats["lookups"] += 1
        rec = self.directory.get(msg.session_id, self.ctx.now())
        self.stats["found"] += rec is not None
        self.ctx.reply(env, SessionFound(msg.ref, () if rec is None else (rec,),
                                         self.directory.is_ended(msg.session_id)))


# --------------------------------------------------------------------------- the hub's side


def session_records(hub: HubBase, conn: ClientConn) -> tuple[SessionRecord, ...]:
    """The records of `conn`'s open sessions (one per session id), with their subscriptions."""
    by_id: dict[str, list[str]] = {}
    for tenant, session in conn.sessions.items():
        if session.open:
            by_id.setdefault(session.session_id, []).append(tenant)
    if not by_id:
        return ()
    subs = conn_subscriptions(hub, conn.conn_id)
    node = hub.ctx.address.node
    out = []
    for sid, tenants in by_id.items():
        first = conn.sessions[tenants[0]]
        tenants.sort()
        mine = tuple(s for s in subs if s.tenant in tenants)
        out.append(SessionRecord(sid, first.client_id, node, tuple(tenants), mine, first.token_id,
                                 max(conn.sessions[t].expires_at for t in tenants), 0))
    return tuple(out)


def conn_subscriptions(hub: HubBase, conn_id: str) -> tuple[SubscriptionRecord, ...]:
    """`conn_id`'s subscriptions in the hub's index, sorted."""
    return tuple(SubscriptionRecord(t, s, tuple(sorted(names))) for t, s, names in hub.subs.of_conn(conn_id))


def session_sync_of(hub: HubBase) -> str | None:
    """The name of the node's session sync actor (`HubCluster.session_sync`), or None: one server,
    or a node without one (then a `Resume` works from what the client says alone)."""
    return hub.cluster.session_sync if hub.cluster is not None and hub.cluster.session_sync else None


def sessions_changed(hub: HubBase, conn: ClientConn, ended: Iterable[str] = ()) -> None:
    """Tell the node's session sync how `conn`'s sessions look now (call after a session opened, was
    resumed, got a new token, or its subscriptions changed), and which sessions ended for good."""
    if session_sync_of(hub) is None:  # nobody to tell
        return
    hub.ctx.publish(SessionsChanged(session_records(hub, conn), tuple(ended)))
