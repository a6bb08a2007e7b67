"""The replicator's push side: streaming this node's writes to the holders, and write concerns.

`ReplicaStream` is the part of `Replicator` (`commy.core.replication`) that sends. The hub writes
and stamps, then sends `WritesMade`; the writes of one turn of the loop are gathered and streamed
at its end (`ReplicationFlush`). The replicator chains them (`prev` = the stamp of this node's
previous write to the service, which is its own entry in the file's version vector), raises that
entry, and sends one `Replicate` to every live holder. For concern `replicated` it waits for an
ack from every holder sent to (at least replication_factor - 1), for `quorum` from a majority of
the cluster minus itself (asking extra live members when the holders are too few); then it
answers the client, or after `write_timeout` tells it the outcome is unknown -- the write is
here, whether the replicas have it nobody knows. While a concern waits, its `Replicate` goes
again every `write_timeout / 4` to the holders that have not acked it (the message or its ack was
lost); a receiver skips the writes it has and acks again. A holder seen down stops being waited
for: the write goes to the service's new holders instead (`_target_lost`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from commy.core.actor import Actor, TimerId, handles
from commy.core.replica_state import (
    CONCERNS,
    REPLICATOR,
    Key,
    PendingConcern,
    ReplicationConfig,
    ServiceState,
    clocks_to,
)
from commy.core.store_api import ServiceStore
from commy.errors import OUTCOME_UNKNOWN, LocalProtocolError
from commy.messages import (
    Address,
    ConcernTimeout,
    Envelope,
    Error,
    MemberInfo,
    Replicate,
    ReplicateAck,
    ReplicateResend,
    ReplicationFlush,
    WriteRecord,
    WritesMade,
    client_address,
    fast_constructor,
)

_new_record = fast_constructor(WriteRecord)  # positional, without the frozen __init__'s setattrs


class ReplicaStream(Actor):
    """Mixin of `Replicator` (see `commy.core.replication`): what pushes this node's writes."""

    store: ServiceStore
    me: MemberInfo
    config: ReplicationConfig
    stats: dict[str, int]
    concerns: dict[int, PendingConcern]
    awaiting: dict[int, list[int]]
    outbox: dict[Key, list[WritesMade]]
    flush_timer: TimerId | None
    ensure_refs: dict[int, Key]
    batches: dict[int, tuple[list[int], TimerId]]

    if TYPE_CHECKING:  # provided by Replicator and ReplicaSync
        def live_members(self) -> list[str]: ...
        def holders(self, key: Key) -> list[str]: ...
        def state(self, key: Key) -> ServiceState: ...
        def new_ref(self) -> int: ...
        def finish_ensure(self, key: Key) -> None: ...

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
