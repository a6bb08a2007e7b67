"""Membership: who is in the cluster, learned from configured seeds and a join handshake.

The actor keeps a table of members (`MemberInfo` by node id: index, peer address, incarnation)
and the ids that left (with the incarnation that left). It announces what it learns to its node:
`MemberUp(member)` when a member is new or comes back as a higher incarnation (the heartbeat
monitor starts watching it, the runtime's peer directory learns its address, the replicator its
index), `MemberLeft(node_id)` once when a member announces a graceful leave.

Joining: the first `MembershipTick` (at once) announces the seeds; the next sends `JoinRequest(me)`
to each. A member that gets a `JoinRequest` learns the joiner, tells the other members about it
(`MemberList((joiner,), ())`) and answers with everything it knows (`MemberList(members incl.
itself, left ids)`). Every `join_retry` seconds the actor sends `JoinRequest` again to each member
that has not *confirmed* it yet -- by a `JoinRequest` of its own or a `MemberList` naming us at our
incarnation -- so a lost message, a member heard of second hand, or a partition only delays
convergence; a peer that recovers from SUSPECTED or DOWN (it may have restarted and forgotten us)
is asked again. With everyone confirmed no timer runs.

Indexes name the origin of every write stamp, so they are permanent: a node id claiming another
index than the one known, or an index that belongs to another id, is refused with a typed `Error`
(`RemoteProtocolError`); in a `MemberList` the other entries are still taken.

Leaving: the local `Leave` sends `LeaveAnnouncement(me, incarnation)` to every member; from then
on a `JoinRequest` is answered with that announcement. A `LeaveAnnouncement` is only taken from the
node itself. A `left` id in a `MemberList` is hearsay: it is taken (at the incarnation we know)
unless the member itself told us about its current incarnation, and a later word from the member
itself at that incarnation overrides it -- so a stale list can never bury a member that rejoined.
"""

from __future__ import annotations

from dataclasses import dataclass

from commy.core.actor import Actor, Context, TimerId, handles
from commy.errors import BAD_REQUEST, RemoteProtocolError
from commy.messages import (
    Address,
    Envelope,
    Error,
    JoinRequest,
    Leave,
    LeaveAnnouncement,
    MemberInfo,
    MemberLeft,
    MemberList,
    MembershipTick,
    MemberUp,
    PeerStateChanged,
)

MEMBERSHIP = "membership"
MAX_INDEX = 255  # a stamp's low byte; 0 means "unknown origin"
RECOVERED_FROM = frozenset({"suspected", "down"})


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    join_retry: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.join_retry < float("inf"):  # also refuses NaN
            raise ValueError(f"membership.join_retry must be a finite number > 0, got {self.join_retry}")


class Membership(Actor):
    def __init__(self, ctx: Context, me: MemberInfo, seeds: list[MemberInfo],
                 config: MembershipConfig = MembershipConfig()) -> None:
        super().__init__(ctx)
        if me.node_id != ctx.address.node:
            raise ValueError(f"membership of node {ctx.address.node} given the member info of {me.node_id}")
        self.me = me
        self.config = config
        self.members: dict[str, MemberInfo] = {}  # every known member but me
        self.left: dict[str, int] = {}  # node id -> the incarnation that left
        self.refused = 0  # members or claims refused for a conflicting index
        self._hearsay_left: set[str] = set()  # left ids we only read in another's list
        self._firsthand: set[str] = set()  # members whose current incarnation they told us themselves
        self._confirmed: set[str] = set()  # members known to know us: no JoinRequest needed
        self._index_of: dict[str, int] = {me.node_id: me.index}  # everyone ever seen, left or not
        self._owner: dict[int, str] = {me.index: me.node_id}
        _check_range(me, ValueError)
        self._seeds: list[MemberInfo] = []
        for seed in seeds:
            if seed.node_id == me.node_id:
                continue  # one seed list is usually shared by every node, this one included
            _check_range(seed, ValueError)
            if self._conflict(seed):
                raise ValueError(f"seed {seed.node_id}: {self._conflict(seed)}")
            self._claim(seed)
            self._seeds.append(seed)
        self._seeds_announced = False
        self.leaving = False
        self._timer: TimerId | None = None

    def started(self) -> None:
        # Announce the seeds from a timer, not from here: every actor of the node is spawned by
        # then, whatever the order of spawning, so the heartbeat and the peer directory hear it.
        self._arm(0.0)

    # ---- queries

    def member_list(self) -> MemberList:
        """What this node answers a JoinRequest with: all members (itself first), and who left."""
        return MemberList((self.me, *(self.members[n] for n in sorted(self.members))), tuple(sorted(self.left)))

    # ---- handlers

    @handles(MembershipTick)
    def on_tick(self, msg: MembershipTick, env: Envelope) -> None:
        self._timer = None
        if self.leaving:
            return
        if not self._seeds_announced:
            self._seeds_announced = True
            for seed in self._seeds:
                self._learn(seed, firsthand=False)
            # The JoinRequests go out on the next tick, after the MemberUp events were handled
            # (the peer directory must know a seed's address before anything is sent to it).
            self._arm(0.0)
            return
        for node_id in sorted(self.members):
            if node_id not in self._confirmed:
                self.ctx.send(Address(node_id, MEMBERSHIP), JoinRequest(self.me))
        self._arm_if_unconfirmed()

    @handles(JoinRequest)
    def on_join(self, msg: JoinRequest, env: Envelope) -> None:
        joiner = msg.member
        if joiner.node_id != env.sender.node or joiner.node_id == self.me.node_id:
            raise RemoteProtocolError(f"{env.sender.node} sent a join request for {joiner.node_id}", BAD_REQUEST)
        if self.leaving:
            self.ctx.reply(env, LeaveAnnouncement(self.me.node_id, self.me.incarnation))
            return
        if self._learn(joiner, firsthand=True):
            news = MemberList((joiner,), ())
            for node_id in sorted(self.members):
                if node_id != joiner.node_id:
                    self.ctx.send(Address(node_id, MEMBERSHIP), news)
        if joiner.node_id in self.members:
            self._confirmed.add(joiner.node_id)  # it asked us, so it knows us
        self.ctx.reply(env, self.member_list())

    @handles(MemberList)
    def on_member_list(self, msg: MemberList, env: Envelope) -> None:
        sender = env.sender.node
        refused: list[str] = []
        for member in msg.members:
            if member.node_id == self.me.node_id:
                if member.index != self.me.index:
                    refused.append(f"{sender} lists us ({member.node_id}) with index {member.index}, "
                                   f"ours is {self.me.index}")
                elif member.incarnation >= self.me.incarnation:
                    self._confirmed.add(sender)
                continue
            try:
                self._learn(member, firsthand=member.node_id == sender)
            except RemoteProtocolError as exc:
                refused.append(exc.detail)
        for node_id in msg.left:
            self._hearsay_leave(node_id)
        if refused:
            raise RemoteProtocolError("; ".join(refused), BAD_REQUEST)
        if not self.leaving:
            self._arm_if_unconfirmed()

    @handles(LeaveAnnouncement)
    def on_leave_announcement(self, msg: LeaveAnnouncement, env: Envelope) -> None:
        if msg.node_id != env.sender.node:
            raise RemoteProtocolError(f"{env.sender.node} announced the leave of {msg.node_id}", BAD_REQUEST)
        self._leave(msg.node_id, msg.incarnation, hearsay=False)

    @handles(Leave)
    def on_leave(self, msg: Leave, env: Envelope) -> None:
        if self.leaving:
            return
        self.leaving = True
        if self._timer is not None:
            self.ctx.cancel(self._timer)
            self._timer = None
        self.ctx.log.info("leaving", members=len(self.members), incarnation=self.me.incarnation)
        announcement = LeaveAnnouncement(self.me.node_id, self.me.incarnation)
        for node_id in sorted(self.members):
            self.ctx.send(Address(node_id, MEMBERSHIP), announcement)

    @handles(PeerStateChanged)
    def on_peer_state(self, msg: PeerStateChanged, env: Envelope) -> None:
        # A peer we lost touch with may have restarted with an empty table (a seed whose only seed
        # is itself does): make sure it knows us again.
        if msg.new == "healthy" and msg.old in RECOVERED_FROM and msg.peer in self.members:
            self._confirmed.discard(msg.peer)
            if not self.leaving:
                self._arm(0.0)

    @handles(Error)
    def on_error(self, msg: Error, env: Envelope) -> None:
        # The answer to one of our JoinRequests or MemberLists: a conflict only an operator can fix.
        self.ctx.log.error("membership_refused", peer=env.sender.node, code=msg.code, detail=msg.detail)

    # ---- the table

    def _learn(self, member: MemberInfo, *, firsthand: bool) -> bool:
        """Take `member` into the table; True (and MemberUp published) if it is news."""
        node_id = member.node_id
        problem = self._conflict(member) if 1 <= member.index <= MAX_INDEX else f"index {member.index} not in 1..255"
        if problem:
            self.refused += 1
            self.ctx.log.warning("member_refused", node=node_id, index=member.index, reason=problem)
            raise RemoteProtocolError(f"member {node_id}: {problem}", BAD_REQUEST)
        known = self.members.get(node_id)
        if known is not None and member.incarnation <= known.incarnation:
            if firsthand and member.incarnation == known.incarnation:
                self._firsthand.add(node_id)
            return False
        gone = self.left.get(node_id)
        if gone is not None:
            # Back from a leave: a newer incarnation, or the member itself contradicting a rumour.
            if not (member.incarnation > gone or (firsthand and node_id in self._hearsay_left
                                                  and member.incarnation == gone)):
                return False
            del self.left[node_id]
            self._hearsay_left.discard(node_id)
        self._claim(member)
        self.members[node_id] = member
        self._confirmed.discard(node_id)  # a new incarnation has not heard of us yet
        if firsthand:
            self._firsthand.add(node_id)
        else:
            self._firsthand.discard(node_id)
        self.ctx.log.info("member_up", node=node_id, index=member.index, incarnation=member.incarnation,
                          firsthand=firsthand)
        self.ctx.publish(MemberUp(member))
        return True

    def _hearsay_leave(self, node_id: str) -> None:
        if node_id == self.me.node_id or node_id in self._firsthand:
            return  # only the member's own announcement retires what it told us itself
        known = self.members.get(node_id)
        self._leave(node_id, known.incarnation if known is not None else 0, hearsay=True)

    def _leave(self, node_id: str, incarnation: int, *, hearsay: bool) -> None:
        if node_id == self.me.node_id:
            return
        known = self.members.get(node_id)
        if known is not None and known.incarnation > incarnation:
            return  # an older incarnation left; the one we know is newer
        gone = self.left.get(node_id)
        if gone is not None and gone >= incarnation:
            if not hearsay:
                self._hearsay_left.discard(node_id)  # the rumour is now confirmed
            return
        self.members.pop(node_id, None)
        self._confirmed.discard(node_id)
        self._firsthand.discard(node_id)
        self.left[node_id] = incarnation
        if hearsay:
            self._hearsay_left.add(node_id)
        else:
            self._hearsay_left.discard(node_id)
        if known is not None:
            self.ctx.log.info("member_left", node=node_id, incarnation=incarnation, hearsay=hearsay)
            self.ctx.publish(MemberLeft(node_id))

    def _conflict(self, member: MemberInfo) -> str:
        """Why `member` contradicts the indexes known ("" if it does not)."""
        index = self._index_of.get(member.node_id, member.index)
        if index != member.index:
            return f"claims index {member.index}, known as {index}"
        owner = self._owner.get(member.index, member.node_id)
        if owner != member.node_id:
            return f"claims index {member.index}, which is {owner}'s"
        return ""

    def _claim(self, member: MemberInfo) -> None:
        self._index_of[member.node_id] = member.index
        self._owner[member.index] = member.node_id

    # ---- the retry timer

    def _arm(self, delay: float) -> None:
        if self._timer is not None and delay == 0.0:
            self.ctx.cancel(self._timer)  # sooner than planned
            self._timer = None
        if self._timer is None:
            self._timer = self.ctx.set_timer(delay, MembershipTick())

    def _arm_if_unconfirmed(self) -> None:
        if any(node_id not in self._confirmed for node_id in self.members):
            self._arm(self.config.join_retry)


def _check_range(member: MemberInfo, error: type[Exception]) -> None:
    if not 1 <= member.index <= MAX_INDEX:
        raise error(f"member {member.node_id}: index {member.index} not in 1..{MAX_INDEX}")
