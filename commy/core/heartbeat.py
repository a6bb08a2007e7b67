"""Heartbeat monitor: pings every peer each interval and turns missed answers into peer states.

Every `interval` seconds (a `HeartbeatTick` timer) the monitor counts, for each peer, whether the
previous ping went unanswered, then sends a new `HeartbeatPing` with the next sequence number. A
`HeartbeatPong` for a sequence newer than the last answered one, or a `HeartbeatPing` from the peer
itself, clears the miss count and makes the peer HEALTHY again, whatever it was. `suspect_after`
consecutive misses make it SUSPECTED and `down_after` make it DOWN. Any node's pings are answered,
configured peer or not.

With the defaults (0.3 s, 2, 5) a dead peer is DOWN 1.5-1.8 s after its last word. At 5% loss per
message a round trip fails about one time in ten, but a round without any word from the peer (our
round trip failed and its ping was lost) about one time in two hundred, so five in a row -- a false
DOWN -- is a few in a trillion rounds. A one-way cut is seen by the side that stops hearing.

Peers come from two places: the static `peers` list, and the membership actor's events.
`MemberUp` starts watching a new peer (JOINING); for a LEFT peer it means a new incarnation came
back, so the view goes back to JOINING with its misses forgotten; for any other state it only
notes the incarnation (a restarted peer that is DOWN recovers on its first answer, as always).
`MemberLeft` moves the peer to LEFT: it is no longer pinged and never marked DOWN.

Each answered ping's round trip (our clock at the pong minus our clock at the ping, which the
pong echoes) is kept as the view's `rtt` and counted into the peer's `RttHistogram` (`rtts`):
cumulative bucket counts, their sum and count, which the runtime's metrics read as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from commy.core.actor import Actor, Context, handles
from commy.core.membership import PeerState, PeerTable
from commy.messages import (
    Address,
    Envelope,
    HeartbeatPing,
    HeartbeatPong,
    HeartbeatTick,
    MemberLeft,
    MemberUp,
    PeerStateChanged,
    ServerStatus,
)

HEARTBEAT = "heartbeat"
RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds) of the round-trip buckets: loopback is well under a millisecond, a
ping answered after a few seconds is all but a miss."""


@dataclass(frozen=True, slots=True)
class HeartbeatConfig:
    interval: float = 0.3
    suspect_after: int = 2
    down_after: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.interval < float("inf"):  # also refuses NaN
            raise ValueError(f"heartbeat.interval must be a finite number > 0, got {self.interval}")
        if not 1 <= self.suspect_after <= self.down_after:
            raise ValueError(
                f"heartbeat thresholds need 1 <= suspect_after <= down_after, got "
                f"{self.suspect_after} and {self.down_after}"
            )


class RttHistogram:
    """Round trips to one peer: how many fell at or under each bound of `RTT_BUCKETS`, in total."""

    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * len(RTT_BUCKETS)  # per bucket, not cumulative: one increment per sample
        self.count = 0
        self.total = 0.0

    def observe(self, rtt: float) -> None:
        self.count += 1
        self.total += rtt
        for i, bound in enumerate(RTT_BUCKETS):
            if rtt <= bound:
                self.counts[i] += 1
                return

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, samples at or under it) for each bucket, as Prometheus wants them."""
        out, running = [], 0
        for bound, n in zip(RTT_BUCKETS, self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class HeartbeatMonitor(Actor):
    def __init__(self, ctx: Context, peers: list[str], config: HeartbeatConfig = HeartbeatConfig()) -> None:
        super().__init__(ctx)
        self.config = config
        self.table = PeerTable([p for p in peers if p != ctx.address.node])
        self.status = ServerStatus.HEALTHY
        self.incarnations: dict[str, int] = {}  # from MemberUp; static peers have none until then
        self.rtts: dict[str, RttHistogram] = {}  # answered pings' round trips, per peer

    def started(self) -> None:
        # A random first delay spreads the nodes' rounds apart instead of pinging in lockstep.
        self.ctx.set_timer(self.ctx.rng.uniform(0, self.config.interval), HeartbeatTick())

    @handles(HeartbeatTick)
    def on_tick(self, msg: HeartbeatTick, env: Envelope) -> None:
        now = self.ctx.now()
        for peer, view in self.table.views.items():
            if view.state is PeerState.LEFT:
                continue
            if view.last_sent_seq > view.last_acked_seq:
                view.missed += 1
                if view.missed >= self.config.down_after:
                    self._move(peer, PeerState.DOWN)
                elif view.missed >= self.config.suspect_after and view.state is not PeerState.DOWN:
                    self._move(peer, PeerState.SUSPECTED)
            view.last_sent_seq += 1
            self.ctx.send(Address(peer, HEARTBEAT), HeartbeatPing(view.last_sent_seq, now, self.status))
        self.ctx.set_timer(self.config.interval, HeartbeatTick())

    @handles(HeartbeatPing)
    def on_ping(self, msg: HeartbeatPing, env: Envelope) -> None:
        self.ctx.reply(env, HeartbeatPong(msg.seq, msg.sent_at, self.status))
        view = self.table.views.get(env.sender.node)
        if view is not None and view.state is not PeerState.LEFT:
            # The peer's own heartbeat is evidence too: a round is missed only when our ping or
            # its pong is lost *and* the peer's ping to us is lost, which at 5% loss per message
            # turns a false DOWN from hours away into practically never.
            view.missed = 0
            self._move(env.sender.node, PeerState.HEALTHY)

    @handles(HeartbeatPong)
    def on_pong(self, msg: HeartbeatPong, env: Envelope) -> None:
        view = self.table.views.get(env.sender.node)
        if view is None or msg.seq <= view.last_acked_seq or msg.seq > view.last_sent_seq:
            return  # an old, duplicated or unsolicited answer says nothing new
        view.last_acked_seq = msg.seq
        view.missed = 0
        view.rtt = rtt = self.ctx.now() - msg.ping_sent_at
        hist = self.rtts.get(env.sender.node)
        if hist is None:
            hist = self.rtts[env.sender.node] = RttHistogram()
        hist.observe(rtt)
        if view.state is not PeerState.LEFT:
            self._move(env.sender.node, PeerState.HEALTHY)

    @handles(MemberUp)
    def on_member_up(self, msg: MemberUp, env: Envelope) -> None:
        member = msg.member
        peer = member.node_id
        if peer == self.ctx.address.node:
            return
        if member.incarnation < self.incarnations.get(peer, member.incarnation):
            return  # about a process older than one we know of
        self.incarnations[peer] = member.incarnation
        if self.table.add(peer):
            self.ctx.log.info("peer_watched", peer=peer, incarnation=member.incarnation)
        elif self.table.state(peer) is PeerState.LEFT:
            # The membership actor announces a member again only when it is news: after a leave,
            # that is the peer coming back (normally as a new incarnation).
            self._publish(peer, self.table.rejoin(peer, self.ctx.now()))

    @handles(MemberLeft)
    def on_member_left(self, msg: MemberLeft, env: Envelope) -> None:
        if msg.node_id in self.table.views:
            self._move(msg.node_id, PeerState.LEFT)

    def _move(self, peer: str, new: PeerState) -> None:
        self._publish(peer, self.table.move(peer, new, self.ctx.now()))

    def _publish(self, peer: str, event: PeerStateChanged | None) -> None:
        if event is not None:
            self.ctx.log.info("peer_state", peer=peer, old=event.old, new=event.new)
            self.ctx.publish(event)
