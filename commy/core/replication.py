"""The replicator: streams this node's writes to the other holders and applies theirs here.

Members come from `MemberUp` / `MemberLeft`, liveness from the heartbeat monitor's
`PeerStateChanged` (healthy or suspected = live). A service's holders are its rendezvous replicas
over the live members plus every node seen holding it in a digest (nodes with clients on it).

Streaming this node's writes and the write concerns (`replicated`, `quorum`) are in
`commy.core.replica_stream`: every live holder gets each write, and a concern answers the client
once enough of them acked, or says the outcome is unknown after `write_timeout`.

Applying. A write whose stamp the version vector already covers is a duplicate. Any other is
applied by the conflict rule (`Resolver`); it is a conflict (counted) when the variable's current
stamp is from another origin and the sender had not seen it (its `context`). The vector entry of
the write's origin advances when the write's `prev` is covered; otherwise there is a gap: the write
is applied but stashed, and the sender is asked for a sync of the service.

Anti-entropy, sync, snapshot transfers and resurrection are in `commy.core.replica_sync`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from commy.core.actor import Context, TimerId, handles
from commy.core.hlc import HybridClock, millis_of, origin_of
from commy.core.membership import REACHABLE
from commy.core.placement import rendezvous, replicas
from commy.core.replica_state import (
    LAG_SAMPLES,
    REPLICATOR,
    STAT_NAMES,
    Key,
    Merge,
    PendingConcern,
    PendingEnsure,
    ReplicationConfig,
    Resolver,
    ServiceState,
    check_stamp,
    clocks_from,
)
from commy.core.replica_stream import ReplicaStream
from commy.core.replica_sync import ReplicaSync
from commy.core.store_api import ServiceHandle, ServiceStore
from commy.core.transfer import IncomingTransfer, SnapshotCache
from commy.errors import LocalProtocolError
from commy.messages import (
    Address,
    Envelope,
    Error,
    MemberInfo,
    MemberLeft,
    MemberUp,
    PeerStateChanged,
    RemoteWrites,
    Replicate,
    ReplicateAck,
    ReplicationTick,
    VariableChanged,
    WriteRecord,
    WritesMade,
)

HUB = "clients"  # the client hub's actor name: it announces remote writes to subscribers
LIVE_STATES = REACHABLE

__all__ = ["REPLICATOR", "ReplicationConfig", "Replicator"]


class Replicator(ReplicaStream, ReplicaSync):
    def __init__(self, ctx: Context, *, store: ServiceStore, clock: HybridClock, me: MemberInfo,
                 config: ReplicationConfig, merge: Merge | None = None,
                 exists: Callable[[str, str], bool] | None = None) -> None:
        super().__init__(ctx)
        # Whether the node's catalog has a service: a copy is kept only of what it has, so a service
        # deleted here is not brought back by a peer that has not heard of the deletion yet.
        self.exists = exists
        if clock.index != me.index:
            raise LocalProtocolError(f"clock index {clock.index} is not this member's index {me.index}")
        self.store = store
        self.clock = clock
        self.me = me
        self.config = config
        self.resolver = Resolver(config.conflict, config.priorities, merge)
        self.members: dict[str, MemberInfo] = {}
        self.live: set[str] = set()  # peers the heartbeat monitor hears (members or not)
        self.holdings: dict[str, set[Key]] = {}  # peer -> services its last digest listed
        self.services: dict[Key, ServiceState] = {}
        self.concerns: dict[int, PendingConcern] = {}  # by ref (the ConcernTimeout's)
        self.awaiting: dict[int, list[int]] = {}  # Replicate msg id -> the refs of the concerns it carries
        self.outbox: dict[Key, list[WritesMade]] = {}  # writes made this turn of the loop, not yet streamed
        self.flush_timer: TimerId | None = None
        self.ensures: dict[Key, PendingEnsure] = {}
        self.ensure_refs: dict[int, Key] = {}  # ConcernTimeout refs that belong to ensures
        self.batches: dict[int, tuple[list[int], TimerId]] = {}  # ReplicateResend batch -> its concerns, its timer
        self.snapshots = SnapshotCache(config.snapshot_ttl)
        self.incoming: dict[str, IncomingTransfer] = {}
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self.lag_samples: deque[float] = deque(maxlen=LAG_SAMPLES)
        """Seconds from a remote write's stamp to its apply here (stamp clocks differ by any skew)."""
        self._next_ref = 1
        self.gone: set[str] = set()  # peers seen down or gone (catching up waits for the others' digests)
        self.catching_up_since: float | None = None  # see ReplicaSync.start_catch_up
        self.digested: set[str] = set()  # peers whose digest came while catching up

    def started(self) -> None:
        # Stamps issued after a restart must sort after everything already on disk.
        for tenant, service in self.held():
            for stamp in self.store.open(tenant, service).clocks().values():
                self.clock.observe(stamp)
        self.ctx.set_timer(self.ctx.rng.uniform(0, self.config.anti_entropy_interval), ReplicationTick())
        self.start_catch_up()

    # ---- who is out there

    @handles(MemberUp)
    def _member_up(self, msg: MemberUp, env: Envelope) -> None:
        if msg.member.node_id != self.me.node_id:
            self.members[msg.member.node_id] = msg.member

    @handles(MemberLeft)
    def _member_left(self, msg: MemberLeft, env: Envelope) -> None:
        self.members.pop(msg.node_id, None)
        self.live.discard(msg.node_id)
        self.gone.add(msg.node_id)
        self.holdings.pop(msg.node_id, None)
        self._target_lost(msg.node_id)
        self.check_caught_up()

    @handles(PeerStateChanged)
    def _peer_state(self, msg: PeerStateChanged, env: Envelope) -> None:
        if msg.new in LIVE_STATES:
            if msg.old not in LIVE_STATES and msg.peer in self.members:  # back or new: it may be catching up
                self.send_digest([msg.peer])
            self.live.add(msg.peer)
            self.gone.discard(msg.peer)
        else:
            self.live.discard(msg.peer)
            self.gone.add(msg.peer)
            self._target_lost(msg.peer)
            self.check_caught_up()

    def live_members(self) -> list[str]:
        return sorted(n for n in self.members if n in self.live)

    def holders(self, key: Key) -> list[str]:
        """Live peers that should get this service's writes: its replicas and its known holders."""
        live = self.live_members()
        seen = [n for n in live if key in self.holdings.get(n, ())]
        everyone = replicas(key[0], key[1], [*live, self.me.node_id], self.config.replication_factor, seen)
        return [n for n in everyone if n != self.me.node_id and n in self.live and n in self.members]

    def is_replica(self, key: Key, also: str = "") -> bool:
        """Whether this node is among the service's rendezvous replicas (counting `also` as live:
        a digest's sender may be heard before the heartbeat monitor says so)."""
        live = [*self.live_members(), self.me.node_id, *([also] if also in self.members else [])]
        return self.me.node_id in rendezvous(key[0], key[1], live, self.config.replication_factor)

    def known(self, key: Key) -> bool:
        """Whether the catalog has this service (always, without a catalog to ask)."""
        return self.exists is None or self.exists(*key)

    def held(self) -> list[Key]:
        return [(t, s) for t in self.store.tenants() for s in self.store.services(t)]

    def state(self, key: Key) -> ServiceState:
        st = self.services.get(key)
        if st is None:
            st = self.services[key] = ServiceState()
        return st

    def new_ref(self) -> int:
        ref = self._next_ref
        self._next_ref += 1
        return ref

    @handles(Error)
    def _error(self, msg: Error, env: Envelope) -> None:
        # A peer refused one of our messages (a bug or version skew somewhere): say so, carry on.
        self.ctx.log.warning("peer_error", peer=env.sender.node, code=msg.code, detail=msg.detail)

    # ---- applying other nodes' writes

    @handles(Replicate)
    def _replicate(self, msg: Replicate, env: Envelope) -> None:
        key = (msg.tenant, msg.service)
        if not self.known(key):
            # Deleted here, or created so recently its catalog record has not come: no ack, so the
            # sender resends (by then the record is here) or, for a deleted one, gives up.
            self.ctx.log.info("replicate_unknown_service", tenant=key[0], service=key[1], peer=env.sender.node)
            return
        context = clocks_from(msg.context)
        handle = self.store.open(*key, create=True)
        vv = handle.clocks()
        st = self.state(key)
        changes: list[VariableChanged] = []
        now = self.ctx.now()
        gap = False
        for w in msg.writes:
            origin = origin_of(w.stamp)
            if w.stamp <= vv.get(origin, 0):
                self.stats["duplicates"] += 1
                continue
            self.apply(key, handle, w, context, changes)
            self.lag_samples.append(now - millis_of(w.stamp) / 1000)
            if vv.get(origin, 0) >= w.prev:
                handle.set_clock(origin, st.advance(vv, origin, w.stamp))
            else:
                st.stash.setdefault(origin, {})[w.prev] = w.stamp
                self.stats["gaps"] += 1
                gap = True
        self.ctx.reply(env, ReplicateAck(msg.tenant, msg.service, len(msg.writes)))
        self.announce(changes)
        if gap:
            self.request_sync(key, env.sender.node, vv)

    def apply(self, key: Key, handle: ServiceHandle, w: WriteRecord, context: dict[int, int],
              changes: list[VariableChanged]) -> None:
        """Apply one write by the conflict rule; a change to the file is added to `changes`."""
        self.clock.observe(check_stamp(w.stamp))
        current = handle.read(w.name)
        cur = None
        if current is not None:
            cur = (current.value, current.stamp)
            origin = origin_of(current.stamp)
            if current.stamp != w.stamp and origin != origin_of(w.stamp) and context.get(origin, 0) < current.stamp:
                self.stats["conflicts"] += 1  # the sender wrote without having seen what is here
        result = self.resolver.resolve(cur, w.value, w.stamp)
        if result is None:
            return
        value, stamp = result
        version = handle.write(w.name, value, stamp=stamp)
        writers = self.state(key).writers
        if stamp == w.stamp:
            writers[w.name] = w.writer
        self.stats["applied"] += 1
        changes.append(VariableChanged(key[0], key[1], w.name, value, version, writers.get(w.name, ""), stamp))

    def announce(self, changes: Sequence[VariableChanged]) -> None:
        if changes:
            self.ctx.send(Address(self.me.node_id, HUB), RemoteWrites(tuple(changes)))

