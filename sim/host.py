"""`SimHost`: the `commy.core.node.Host` of one incarnation of one simulated node.

A node asks its host for the time, for one-shot callbacks and to transmit envelopes. Here the time
is the scheduler's virtual time plus this node's clock skew (set or jumped by faults), callbacks
are scheduler events, and transmitting hands the envelope to the simulated network -- with the
network's common case (a plain FIFO link) inlined here, since it runs once per message.

A crash kills the host: `alive` goes False and every event still pending for it -- timers,
arrivals, link events -- is skipped when it comes due; the restarted node gets a fresh host (its
incarnation number is one higher), so nothing of the old one leaks into the new. A paused host
holds the events that come due (`held`) and the cluster replays them, in order, at resume.

Client connections (`sim.client_net`) attach to one incarnation: envelopes a node sends to a
`client:<conn_id>` pseudo-node have no peer link and go to the connection registered under that
name in `clients` (looked up only after the peer-link lookup misses, so peer traffic pays nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappush
from typing import TYPE_CHECKING, Any

from commy.core.node import Node
from commy.messages import Envelope
from sim.scheduler import Event, Scheduler

if TYPE_CHECKING:
    from sim.client_net import SimConnection
    from sim.network import Network, SimLink


class SimHost:
    """One incarnation of a simulated node's runtime."""

    __slots__ = ("_arrive", "_heap", "_net", "_next_seq", "_random", "_sched", "alive", "clients", "held",
                 "incarnation", "links", "node", "node_id", "paused", "skew")

    def __init__(self, node_id: str, incarnation: int, sched: Scheduler, net: Network, skew: float = 0.0) -> None:
        self.node_id = node_id
        self.incarnation = incarnation
        self.skew = skew
        self.alive = True
        self.paused = False
        self.held: list[tuple[Callable[[Any], None], Any]] = []
        self.node: Node  # set by the cluster right after the Node is built on this host
        self.links: dict[str, SimLink] = {}  # outgoing links by destination; filled by the network
        self.clients: dict[str, SimConnection] = {}  # client connections by pseudo-node "client:<conn_id>"
        self._sched = sched
        self._net = net
        # Bound once for the per-message path in `transmit`.
        self._heap = sched.heap
        self._next_seq = sched.next_seq
        self._random = net.random
        self._arrive = net.arrive

    # ---- the Host protocol

    def now(self) -> float:
        return self._sched.now + self.skew

    def call_later(self, delay: float, fn: Callable[[], None]) -> Event:
        return self._sched.after(delay, self._fire, fn)

    def cancel_call(self, handle: Any) -> None:
        Scheduler.cancel(handle)

    def transmit(self, env: Envelope) -> None:
        if not self.alive:  # a node being torn down by a crash must not reach anyone
            return
        link = self.links.get(env.receiver.node)
        if link is None:
            conn = self.clients.get(env.receiver.node)
            if conn is not None:  # a reply or event for a simulated client connected here
                conn.from_server(env)
                return
            # Like the TCP transport's `unroutable`: a node we have no link to (e.g. a rogue's
            # claimed id) is not reachable, and saying so is not a bug in the sender.
            self._net.unroutable(self.node_id, env)
            return
        now = self._sched.now
        if link.fast and now >= link.down_until:
            # The network's common case, inlined here because it runs once per message: encode,
            # draw a uniform latency, keep the link FIFO, schedule the arrival.
            when = now + link.lo + link.span * self._random()
            if when < link.last:
                when = link.last
            else:
                link.last = when
            heappush(self._heap, [when, self._next_seq(), self._arrive, (link, link.tx.encode(env), link.epoch)])
        else:
            self._net.transmit(link, env)

    # ---- gates every event for this node goes through

    def _fire(self, fn: Callable[[], None]) -> None:
        if not self.alive:
            return
        if self.paused:
            self.held.append((self._fire, fn))
            return
        fn()

    def run(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Run `fn(arg)` for this node now, or hold it while paused, or drop it if crashed."""
        if not self.alive:
            return
        if self.paused:
            self.held.append((fn, arg))
            return
        fn(arg)

    def take_held(self) -> list[tuple[Callable[[Any], None], Any]]:
        held, self.held = self.held, []
        return held
