"""The replicator: streams this node's writes to the other holders and applies theirs here.

Members come from `MemberUp` / `MemberLeft`, liveness from the heartbeat monitor's
`PeerStateChanged` (healthy or suspected = live). A service's holders are its rendezvous replicas
over the live members plus every node seen holding it in a digest (nodes with clients on it).

Streaming. The hub writes and stamps, then sends `WritesMade`; the replicator chains the writes
(`prev` = the stamp of this node's previous write to the service, which is its own entry in the
file's version vector), raises that entry, and sends one `Replicate` to every live holder. For
concern `replicated` it waits for an ack from every holder sent to (at least replication_factor
- 1), for `quorum` from a majority of the cluster minus itself (asking extra live members when the
holders are too few); then it answers the client, or after `write_timeout` tells it the outcome is
unknown -- the write is here, whether the replicas have it nobody knows. While a concern waits,
its `Replicate` goes again every `write_timeout / 4` to the holders that have not acked it (the
message or its ack was lost); a receiver skips the writes it has and acks again.

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
    CONCERNS,
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
    clocks_to,
)
from commy.core.replica_sync import ReplicaSync
from commy.core.store_api import ServiceHandle, ServiceStore
from commy.core.transfer import IncomingTransfer, SnapshotCache
from commy.errors import OUTCOME_UNKNOWN, LocalProtocolError
from commy.messages import (
    Address,
    ConcernTimeout,
    Envelope,
    Error,
    MemberInfo,
    MemberLeft,
    MemberUp,
    PeerStateChanged,
    RemoteWrites,
    Replicate,
    ReplicateAck,
    ReplicateResend,
    ReplicationFlush,
    ReplicationTick,
    VariableChanged,
    WriteRecord,
    WritesMade,
    client_address,
    fast_constructor,
)

_new_record = fast_constructor(WriteRecord)  # positional, without the frozen __init__'s setattrs

HUB = "clients"  # the client hub's actor name: it announces remote writes to subscribers
LIVE_STATES = REACHABLE

__all__ = ["REPLICATOR", "ReplicationConfig", "Replicator"]


class Replicator(ReplicaSync):
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

    def _target_lost(self, peer: str) -> None:
        """Writes waiting for `peer`'s ack stop waiting for it: they go to the service's new holders
        instead (placement without `peer`), so a replicated write outlives a replica's death without
        running into its timeout."""
        for ref, concern in list(self.concerns.items()):
            if peer not in concern.targets or peer in concern.acked or concern.message is None:
                continue
            concern.targets.discard(peer)
            msg = concern.message
            if len(concern.acked) + len(concern.targets - concern.acked) < concern.floor:
                key = (msg.tenant, msg.service)
                spare = [n for n in (self.live_members() if concern.quorum else self.holders(key))
                         if n not in concern.targets]
                for node in spare[:concern.floor - len(concern.targets)]:
                    concern.targets.add(node)
                    msg_id = self.ctx.send(Address(node, REPLICATOR), msg)
                    self.awaiting[msg_id] = [ref]
                    concern.sent.append(msg_id)
            if not concern.quorum:
                concern.needed = max(concern.floor, len(concern.targets))
            self._check_concern(ref)

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

    # ---- streaming this node's writes

    @handles(WritesMade)
    def _writes_made(self, msg: WritesMade, env: Envelope) -> None:
        # Gathered, then streamed at the end of this turn of the loop (`ReplicationFlush`, a zero
        # delay timer): one Replicate per service and target carries every write a burst of client
        # requests made, and one ack answers them all.
        if msg.concern not in CONCERNS:
            raise LocalProtocolError(f"unknown write concern {msg.concern!r}")
        self.outbox.setdefault((msg.tenant, msg.service), []).append(msg)
        if self.flush_timer is None:
            self.flush_timer = self.ctx.set_timer(0.0, ReplicationFlush())

    @handles(ReplicationFlush)
    def _flush(self, msg: ReplicationFlush, env: Envelope) -> None:
        self.flush_timer = None
        outbox, self.outbox = self.outbox, {}
        for key, made in outbox.items():
            self._stream(key, made)

    def _stream(self, key: Key, made: list[WritesMade]) -> None:
        handle = self.store.open(*key, create=True)
        before = handle.clocks()
        st = self.state(key)
        prev = before.get(self.me.index, 0)
        chained: list[WriteRecord] = []
        for m in made:
            for w in m.writes:
                chained.append(_new_record(w.name, w.value, w.stamp, prev, w.writer))  # not replace(): per write
                prev = w.stamp
                st.writers[w.name] = w.writer
        if chained:
            handle.set_clock(self.me.index, prev)
        self.stats["writes_streamed"] += len(chained)
        targets = self.holders(key)
        refs = [ref for m in made if (ref := self._concern(m, targets)) is not None]
        out = Replicate(key[0], key[1], tuple(chained), clocks_to(before))
        for ref in refs:
            self.concerns[ref].message = out
            self.concerns[ref].targets = set(targets)
        for node in targets:
            msg_id = self.ctx.send(Address(node, REPLICATOR), out)
            if refs:
                self.awaiting[msg_id] = list(refs)  # its own list: a met concern leaves the others
                for ref in refs:
                    self.concerns[ref].sent.append(msg_id)
        for ref in refs:
            self._check_concern(ref)
        waiting = [ref for ref in refs if ref in self.concerns]  # not answered at once
        if waiting:  # sent again until acked: a lost Replicate or ack must not cost the whole write_timeout
            batch = self.new_ref()
            self.batches[batch] = (waiting, self.ctx.set_timer(self.config.write_timeout / 4, ReplicateResend(batch)))
            for ref in waiting:
                self.concerns[ref].batch = batch

    def _concern(self, msg: WritesMade, targets: list[str]) -> int | None:
        """Register what `msg`'s concern waits for (extending `targets` for a quorum); its ref."""
        if msg.concern == "local":
            return None
        cfg = self.config
        if msg.concern == "replicated":
            floor = min(cfg.replication_factor, cfg.cluster_size) - 1
            needed = max(len(targets), floor)
        else:
            floor = needed = cfg.cluster_size // 2  # a majority of the cluster, this node being one of it
            extra = [n for n in self.live_members() if n not in targets]
            targets.extend(extra[:max(0, needed - len(targets))])
        ref = self.new_ref()
        self.concerns[ref] = PendingConcern(client_address(msg.conn), msg.request_id, msg.reply, needed, floor,
                                            msg.concern == "quorum")
        if needed > 0:
            self.concerns[ref].timer = self.ctx.set_timer(cfg.write_timeout, ConcernTimeout(ref))
        return ref

    @handles(ReplicateResend)
    def _resend(self, msg: ReplicateResend, env: Envelope) -> None:
        """The batch's Replicate again, to each target some concern of it still waits for."""
        batch = self.batches.pop(msg.batch, None)
        refs = [ref for ref in batch[0] if ref in self.concerns] if batch is not None else []
        if not refs or (out := self.concerns[refs[0]].message) is None:
            return  # every concern of the batch was answered or timed out
        missing: dict[str, list[int]] = {}
        for ref in refs:
            concern = self.concerns[ref]
            for node in sorted(concern.targets - concern.acked):
                missing.setdefault(node, []).append(ref)
        for node, waiting in missing.items():  # a target seen down is out of `targets` (`_target_lost`)
            msg_id = self.ctx.send(Address(node, REPLICATOR), out)
            self.awaiting[msg_id] = waiting
            for ref in waiting:
                self.concerns[ref].sent.append(msg_id)
        self.stats["resends"] += len(missing)
        self.batches[msg.batch] = (refs, self.ctx.set_timer(self.config.write_timeout / 4, msg))

    @handles(ReplicateAck)
    def _ack(self, msg: ReplicateAck, env: Envelope) -> None:
        for ref in list(self.awaiting.pop(env.request_id or 0, ())):
            concern = self.concerns.get(ref)
            if concern is not None:
                concern.acked.add(env.sender.node)
                self._check_concern(ref)

    def _check_concern(self, ref: int) -> None:
        concern = self.concerns[ref]
        if len(concern.acked) < concern.needed:
            return
        self._end_concern(ref)
        if concern.reply is not None:
            self.ctx.send(concern.client, concern.reply, request_id=concern.request_id)

    def _end_concern(self, ref: int) -> PendingConcern:
        concern = self.concerns.pop(ref)
        if concern.timer is not None:
            self.ctx.cancel(concern.timer)
        for msg_id in concern.sent:  # only this concern stops waiting: a batch carries others too
            refs = self.awaiting.get(msg_id)
            if refs is not None:
                if ref in refs:
                    refs.remove(ref)
                if not refs:
                    del self.awaiting[msg_id]
        batch = self.batches.get(concern.batch)
        if batch is not None and not any(r in self.concerns for r in batch[0]):
            del self.batches[concern.batch]  # nothing of it waits any more: no resends
            self.ctx.cancel(batch[1])
        return concern

    @handles(ConcernTimeout)
    def _timeout(self, msg: ConcernTimeout, env: Envelope) -> None:
        if msg.ref in self.ensure_refs:
            self.finish_ensure(self.ensure_refs[msg.ref])
            return
        if msg.ref not in self.concerns:
            return
        concern = self._end_concern(msg.ref)
        self.stats["concern_timeouts"] += 1
        detail = (f"the write is applied on {self.me.node_id}, but only {len(concern.acked)} of the "
                  f"{concern.needed} replicas it waits for confirmed within {self.config.write_timeout:g}s: "
                  "outcome unknown")
        self.ctx.log.warning("concern_timeout", acked=len(concern.acked), needed=concern.needed)
        self.ctx.send(concern.client, Error(OUTCOME_UNKNOWN, detail), request_id=concern.request_id)

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

