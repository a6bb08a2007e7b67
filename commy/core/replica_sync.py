"""The replicator's pull side: anti-entropy digests, sync, snapshot transfers and resurrection.

Every `anti_entropy_interval` the replicator sends each live peer a `ServiceDigest`: every service
this node holds, with its version vector. A peer that sees an origin ahead of its own (or lacks a
service it is a replica of) asks for a sync; one sync per service is in flight at a time (until
the answer, or `write_timeout`).

A `SyncServiceRequest` carries the requester's vector; the answer holds every entry the requester
lacks (`Resolver.needed`) and the responder's vector. The requester applies the entries by the
conflict rule and then raises its vector to the pointwise maximum -- it now has everything the
responder had. An answer too big for one message (`max_sync_bytes`) says `transfer` instead, and
the requester fetches a snapshot in chunks (`commy.core.transfer`); the responder's vector is
applied only with the snapshot's contents, never before.

`EnsureService` (a client opened a service this node has no file for) asks every live peer known
to hold it for everything, and answers `ServiceReady` as soon as one of them answered with state
(the others' answers, if any, are applied when they come, and anti-entropy does the rest), or once
all answered without any, or when `ensure_timeout` passed -- a holder that crashed and is not yet
seen DOWN must not hold the client up.

Catching up at start. A node that restarts may have lost its disk while its wall clock went back:
stamps it makes then could sort below the ones its previous incarnation issued, which the peers'
version vectors cover -- they would drop its new writes as duplicates. So after `started` the
clock is "catching up": every digest's clocks are observed into it, and once a digest came from
every peer that may be alive (live, or a member not seen down) -- or after `CATCH_UP_INTERVALS`
anti-entropy intervals when they do not all answer -- the replicator publishes `ClockSynced`.
Until then the hub (told by `ClockCatchingUp`) refuses writes. A one-node cluster never waits.
A peer that becomes live gets this node's digest at once, not at the next tick: a (re)started
node hears from each peer as soon as that peer hears it, so the wait is about one heartbeat round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from commy.codec import DEFAULT_CODEC
from commy.core.actor import Actor, handles
from commy.core.hlc import HybridClock
from commy.core.replica_state import (
    REPLICATOR,
    Key,
    PendingEnsure,
    ReplicationConfig,
    Resolver,
    ServiceState,
    clocks_from,
    clocks_to,
    sync_floor,
)
from commy.core.store_api import ServiceHandle, ServiceStore
from commy.core.transfer import MAX_CHUNK, IncomingTransfer, SnapshotCache, Step, make_chunks
from commy.errors import RemoteProtocolError
from commy.messages import (
    Address,
    ClockCatchingUp,
    ClockCatchUpTimer,
    ClockSynced,
    ConcernTimeout,
    EnsureService,
    Envelope,
    FileTransferChunk,
    FileTransferRequest,
    MemberInfo,
    ReplicationTick,
    ServiceClocks,
    ServiceDigest,
    ServiceReady,
    SyncServiceRequest,
    SyncServiceResponse,
    TransferTimeout,
    VariableChanged,
    WriteRecord,
)

CATCH_UP_INTERVALS = 3  # anti-entropy intervals a starting node waits at most for its peers' digests


class ReplicaSync(Actor):
    """Mixin of `Replicator` (see `commy.core.replication`): what pulls state from peers."""

    store: ServiceStore
    clock: HybridClock
    me: MemberInfo
    config: ReplicationConfig
    resolver: Resolver
    holdings: dict[str, set[Key]]
    ensures: dict[Key, PendingEnsure]
    ensure_refs: dict[int, Key]
    snapshots: SnapshotCache
    incoming: dict[str, IncomingTransfer]
    stats: dict[str, int]
    members: dict[str, MemberInfo]
    live: set[str]
    gone: set[str]
    catching_up_since: float | None
    digested: set[str]

    if TYPE_CHECKING:  # provided by Replicator
        def live_members(self) -> list[str]: ...
        def is_replica(self, key: Key, also: str = "") -> bool: ...
        def held(self) -> list[Key]: ...
        def known(self, key: Key) -> bool: ...
        def state(self, key: Key) -> ServiceState: ...
        def new_ref(self) -> int: ...
        def apply(self, key: Key, handle: ServiceHandle, w: WriteRecord, context: dict[int, int],
                  changes: list[VariableChanged]) -> None: ...
        def announce(self, changes: list[VariableChanged]) -> None: ...

    # ---- anti-entropy

    @handles(ReplicationTick)
    def _tick(self, msg: ReplicationTick, env: Envelope) -> None:
        now = self.ctx.now()
        self.snapshots.prune(now)
        self.send_digest(self.live_members())
        self.ctx.set_timer(self.config.anti_entropy_interval, ReplicationTick())
        self.check_caught_up()  # the bounded wait may be over

    def send_digest(self, peers: list[str]) -> None:
        """Every service this node holds, with its version vector, to each of `peers`."""
        if peers:
            digest = ServiceDigest(tuple(ServiceClocks(t, s, clocks_to(self.store.open(t, s).clocks()))
                                         for t, s in self.held()))
            for peer in peers:
                self.ctx.send(Address(peer, REPLICATOR), digest)

    @handles(ServiceDigest)
    def _digest(self, msg: ServiceDigest, env: Envelope) -> None:
        peer = env.sender.node
        self.holdings[peer] = {(sc.tenant, sc.service) for sc in msg.services}
        for sc in msg.services:
            key = (sc.tenant, sc.service)
            theirs = clocks_from(sc.clocks)
            if theirs:  # later stamps here sort after theirs (a restart with a lost disk and a slow clock)
                self.clock.observe(max(theirs.values()))
            if not self.known(key):
                continue  # deleted here (or not in this node's catalog yet): never pulled back
            if self.store.exists(*key):
                ours = self.store.open(*key).clocks()
                if any(s > ours.get(o, 0) for o, s in theirs.items()):
                    self.request_sync(key, peer, ours)
            elif self.is_replica(key, also=peer):
                if theirs:
                    self.request_sync(key, peer, {})
                else:  # the peer holds it empty (created, never written): nothing to fetch, just hold it
                    self.store.open(*key, create=True)
        if self.catching_up_since is not None:
            self.digested.add(peer)
            self.check_caught_up()

    # ---- catching up at start

    def start_catch_up(self) -> None:
        """From `started`: stamps wait for the peers' digests (not in a one-node cluster)."""
        if self.config.cluster_size > 1:
            self.catching_up_since = self.ctx.now()
            self.ctx.set_timer(0.0, ClockCatchUpTimer())

    @handles(ClockCatchUpTimer)
    def _announce_catch_up(self, msg: ClockCatchUpTimer, env: Envelope) -> None:
        if self.catching_up_since is not None:
            self.ctx.publish(ClockCatchingUp(self.catching_up_since))

    def check_caught_up(self) -> None:
        """Publish `ClockSynced` once every peer that may be alive sent a digest, or the wait is over.

        A peer may be alive if the heartbeat monitor hears it, or it is a member not seen down yet
        (not heard *yet*: the first heartbeat rounds are still under way)."""
        since = self.catching_up_since
        if since is None:
            return
        waiting = ({*self.members, *self.live} - self.gone) - self.digested
        complete = bool(self.digested) and not waiting
        waited = self.ctx.now() - since
        if not complete and waited < CATCH_UP_INTERVALS * self.config.anti_entropy_interval:
            return
        self.catching_up_since = None
        self.ctx.log.info("clock_synced", waited=round(waited, 3), complete=complete, digests=sorted(self.digested),
                          missing=sorted(waiting))
        self.ctx.publish(ClockSynced(waited, complete))

    def request_sync(self, key: Key, peer: str, ours: dict[int, int]) -> None:
        """Ask `peer` for what this node lacks of the service, unless a sync is in flight already."""
        st = self.state(key)
        now = self.ctx.now()
        if st.sync_until > now or st.transfer is not None:
            return
        st.sync_until = now + self.config.write_timeout
        self.stats["syncs"] += 1
        self.ctx.send(Address(peer, REPLICATOR), SyncServiceRequest(key[0], key[1], clocks_to(ours)))

    # ---- sync

    @handles(SyncServiceRequest)
    def _sync_request(self, msg: SyncServiceRequest, env: Envelope) -> None:
        theirs = clocks_from(msg.clocks)
        if not self.store.exists(msg.tenant, msg.service):
            self.ctx.reply(env, SyncServiceResponse(msg.tenant, msg.service, (), (), False))
            return
        handle = self.store.open(msg.tenant, msg.service)
        ours = handle.clocks()
        floor = sync_floor(ours, theirs)
        writers = self.state((msg.tenant, msg.service)).writers
        needed = self.resolver.needed
        entries = tuple(WriteRecord(e.name, e.value, e.stamp, 0, writers.get(e.name, ""))
                        for e in handle.entries() if needed(e.stamp, theirs, floor))
        big = sum(len(e.value) for e in entries) > self.config.max_sync_bytes
        self.ctx.reply(env, SyncServiceResponse(msg.tenant, msg.service, () if big else entries, clocks_to(ours), big))

    @handles(SyncServiceResponse)
    def _sync_response(self, msg: SyncServiceResponse, env: Envelope) -> None:
        peer = env.sender.node
        key = (msg.tenant, msg.service)
        st = self.state(key)
        if msg.transfer:
            if st.transfer is None:
                self.start_transfer(key, peer)
            else:  # the transfer under way brings the state: an ensure waits for that one instead
                pending = self.ensures.get(key)
                if pending is not None and peer in pending.waiting:
                    pending.waiting.discard(peer)
                    pending.waiting.add(self.incoming[st.transfer].peer)
            return
        st.sync_until = float("-inf")
        self.apply_snapshot(msg, peer)

    def apply_snapshot(self, msg: SyncServiceResponse, peer: str) -> None:
        """Apply a sync answer (or a transferred snapshot): its entries, then its version vector."""
        key = (msg.tenant, msg.service)
        theirs = clocks_from(msg.clocks)
        fetched = bool(msg.entries or theirs) and self.known(key)
        if fetched:
            handle = self.store.open(*key, create=True)
            changes: list[VariableChanged] = []
            for w in msg.entries:
                self.apply(key, handle, w, theirs, changes)
            vv = handle.clocks()
            st = self.state(key)
            for origin in {*theirs, *st.stash}:
                stamp = st.advance(vv, origin, theirs.get(origin, 0))
                self.clock.observe(stamp)
                handle.set_clock(origin, stamp)
            self.announce(changes)
        self.ensure_answered(key, peer, fetched)

    # ---- snapshot transfer: the sending end

    @handles(FileTransferRequest)
    def _transfer_request(self, msg: FileTransferRequest, env: Envelope) -> None:
        if not 0 < msg.chunk_size <= MAX_CHUNK or msg.from_chunk < 0:
            raise RemoteProtocolError(f"bad transfer request: chunk size {msg.chunk_size}, from {msg.from_chunk}")
        now = self.ctx.now()
        data = self.snapshots.get(msg.transfer_id, now)
        if data is None:
            data = DEFAULT_CODEC.encode_message(self.snapshot(msg.tenant, msg.service))
            self.snapshots.put(msg.transfer_id, data, now)
        for chunk in make_chunks(msg.transfer_id, data, msg.chunk_size, msg.from_chunk):
            self.ctx.reply(env, chunk)

    def snapshot(self, tenant: str, service: str) -> SyncServiceResponse:
        if not self.store.exists(tenant, service):
            return SyncServiceResponse(tenant, service, (), (), False)
        handle = self.store.open(tenant, service)
        writers = self.state((tenant, service)).writers
        entries = tuple(WriteRecord(e.name, e.value, e.stamp, 0, writers.get(e.name, "")) for e in handle.entries())
        return SyncServiceResponse(tenant, service, entries, clocks_to(handle.clocks()), False)

    # ---- snapshot transfer: the receiving end

    def start_transfer(self, key: Key, peer: str) -> None:
        tr = IncomingTransfer(self.ctx.new_id(), peer, key[0], key[1])
        self.incoming[tr.transfer_id] = tr
        self.state(key).transfer = tr.transfer_id
        self._ask(tr, 0)

    def _ask(self, tr: IncomingTransfer, from_chunk: int) -> None:
        if tr.timer is not None:
            self.ctx.cancel(tr.timer)
        tr.timer = self.ctx.set_timer(self.config.transfer_timeout, TransferTimeout(tr.transfer_id))
        self.ctx.send(Address(tr.peer, REPLICATOR),
                      FileTransferRequest(tr.transfer_id, tr.tenant, tr.service, from_chunk, self.config.chunk_size))

    def _retry(self, tr: IncomingTransfer, why: str) -> None:
        tr.retries += 1
        if tr.retries > self.config.transfer_retries:
            self.ctx.log.warning("transfer_abandoned", peer=tr.peer, tenant=tr.tenant, service=tr.service, why=why)
            self._end_transfer(tr)
            self.ensure_answered((tr.tenant, tr.service), tr.peer, fetched=False)
            return
        self.stats["transfer_resumes"] += 1
        self._ask(tr, tr.ask_from())

    def _end_transfer(self, tr: IncomingTransfer) -> None:
        del self.incoming[tr.transfer_id]
        if tr.timer is not None:
            self.ctx.cancel(tr.timer)
        st = self.state((tr.tenant, tr.service))
        st.transfer = None
        st.sync_until = float("-inf")

    @handles(FileTransferChunk)
    def _chunk(self, msg: FileTransferChunk, env: Envelope) -> None:
        tr = self.incoming.get(msg.transfer_id)
        if tr is None or env.sender.node != tr.peer:
            return  # late, duplicated, or not ours
        step = tr.accept(msg)
        if step is Step.PROGRESS:
            tr.retries = 0
            self._ask_later(tr)
        elif step in (Step.BAD, Step.CORRUPT):
            self.stats["bad_chunks"] += 1
            self.ctx.log.warning("bad_chunk", peer=tr.peer, index=msg.index, whole=step is Step.CORRUPT)
            if step is Step.CORRUPT:
                tr.restart()
            self._retry(tr, step.value)
        elif step is Step.RESEND:
            self._retry(tr, "lost chunk")
        elif step is Step.COMPLETE:
            self._complete(tr)

    def _ask_later(self, tr: IncomingTransfer) -> None:
        """Progress: the no-progress timer starts again."""
        if tr.timer is not None:
            self.ctx.cancel(tr.timer)
        tr.timer = self.ctx.set_timer(self.config.transfer_timeout, TransferTimeout(tr.transfer_id))

    def _complete(self, tr: IncomingTransfer) -> None:
        self._end_transfer(tr)
        try:
            snap = DEFAULT_CODEC.decode_message(tr.data)
        except RemoteProtocolError as exc:
            snap, detail = None, exc.detail
        else:
            detail = f"a {type(snap).__name__}"
        if not isinstance(snap, SyncServiceResponse) or (snap.tenant, snap.service) != (tr.tenant, tr.service) \
                or snap.transfer:
            self.ctx.log.warning("bad_snapshot", peer=tr.peer, detail=detail)
            self.ensure_answered((tr.tenant, tr.service), tr.peer, fetched=False)
            return
        self.stats["transfers"] += 1
        self.apply_snapshot(snap, tr.peer)

    @handles(TransferTimeout)
    def _transfer_timeout(self, msg: TransferTimeout, env: Envelope) -> None:
        tr = self.incoming.get(msg.transfer_id)
        if tr is not None:
            tr.timer = None
            self._retry(tr, "timeout")

    # ---- resurrection

    @handles(EnsureService)
    def _ensure(self, msg: EnsureService, env: Envelope) -> None:
        key = (msg.tenant, msg.service)
        pending = self.ensures.get(key)
        if pending is not None:
            pending.requesters.append(env.sender)
            return
        holders = [n for n in self.live_members() if key in self.holdings.get(n, ())]
        if not holders:
            self.ctx.send(env.sender, ServiceReady(msg.tenant, msg.service, False))
            return
        ref = self.new_ref()
        pending = self.ensures[key] = PendingEnsure(ref, set(holders), [env.sender])
        self.ensure_refs[ref] = key
        pending.timer = self.ctx.set_timer(self.config.ensure_timeout, ConcernTimeout(ref))
        ours = clocks_to(self.store.open(*key).clocks()) if self.store.exists(*key) else ()
        for node in holders:
            self.ctx.send(Address(node, REPLICATOR), SyncServiceRequest(msg.tenant, msg.service, ours))

    def ensure_answered(self, key: Key, peer: str, fetched: bool) -> None:
        pending = self.ensures.get(key)
        if pending is None or peer not in pending.waiting:
            return
        pending.waiting.discard(peer)
        pending.fetched |= fetched
        # One holder's state is enough to serve: waiting for the rest would hold the client up as
        # long as a holder that crashed and is not seen DOWN yet stays silent (ensure_timeout).
        if fetched or not pending.waiting:
            self.finish_ensure(key)

    def finish_ensure(self, key: Key) -> None:
        pending = self.ensures.pop(key)
        del self.ensure_refs[pending.ref]
        if pending.timer is not None:
            self.ctx.cancel(pending.timer)
        for requester in pending.requesters:
            self.ctx.send(requester, ServiceReady(key[0], key[1], pending.fetched))
