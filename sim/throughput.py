"""How fast the simulator runs, for `commy bench` (the only place in sim that reads a real clock).

`measure_delivery_rate` floods a ring of nodes with `Flood` actors: each keeps a window of
HeartbeatPings in flight to its neighbours and answers every ping with a pong, and every pong
triggers the next ping. Each message takes the whole path -- node send, sender PeerLink encode
(codec + framing), scheduler, receiver PeerLink decode and checks, node dispatch, actor, trace --
so the rate is delivered envelopes per real second with the codec on. `measure_five_nodes` times
the heartbeat-steady shape (5 heartbeat nodes, default config) for 60 simulated seconds.
"""

from __future__ import annotations

import time

from commy.core.actor import Actor, Context, handles
from commy.core.heartbeat import HEARTBEAT, HeartbeatMonitor
from commy.core.node import Node
from commy.messages import Address, Envelope, HeartbeatPing, HeartbeatPong, LinkUp, ServerStatus
from sim.cluster import SimCluster

FLOOD = "flood"


class Flood(Actor):
    """Keeps `window` pings in flight to the other nodes; answers pings, chains pongs.

    Messages are immutable, so it sends the same ping and pong objects every time: building a
    message is the application's cost, and this measures the path, not the actor.
    """

    PING = HeartbeatPing(1, 0.0, ServerStatus.HEALTHY)
    PONG = HeartbeatPong(1, 0.0, ServerStatus.HEALTHY)

    def __init__(self, ctx: Context, peers: list[str], window: int) -> None:
        super().__init__(ctx)
        self.peers = [Address(p, FLOOD) for p in peers if p != ctx.address.node]
        self.window = window
        self.sent = 0
        self.started_flood = False

    def _ping(self) -> None:
        self.sent += 1
        self.ctx.send(self.peers[self.sent % len(self.peers)], self.PING)

    @handles(LinkUp)
    def on_link_up(self, msg: LinkUp, env: Envelope) -> None:
        if not self.started_flood:  # wait for the links like a real node would
            self.started_flood = True
            for _ in range(self.window):
                self._ping()

    @handles(HeartbeatPing)
    def on_ping(self, msg: HeartbeatPing, env: Envelope) -> None:
        self.ctx.reply(env, self.PONG)

    @handles(HeartbeatPong)
    def on_pong(self, msg: HeartbeatPong, env: Envelope) -> None:
        self._ping()


def flood_cluster(seed: int = 1, nodes: int = 8, window: int = 8) -> SimCluster:
    ids = [f"n{i}" for i in range(1, nodes + 1)]

    def build(node: Node) -> None:
        node.spawn(FLOOD, lambda ctx: Flood(ctx, ids, window))

    return SimCluster(seed, ids, build)


def measure_delivery_rate(messages: int = 200_000, seed: int = 1) -> float:
    """Delivered messages per real second through the full path (codec, links, nodes, trace)."""
    cluster = flood_cluster(seed)
    cluster.run_for(0.01)  # links up, floods started: not part of the measurement
    before = cluster.delivered
    target = before + messages
    t0 = time.perf_counter()
    while cluster.delivered < target:
        cluster.run_for(0.05)
    elapsed = time.perf_counter() - t0
    return (cluster.delivered - before) / elapsed


def measure_five_nodes(sim_seconds: float = 60.0, seed: int = 1) -> float:
    """Real seconds to simulate 5 heartbeat nodes (default config) for `sim_seconds`."""
    ids = [f"n{i}" for i in range(1, 6)]

    def build(node: Node) -> None:
        node.spawn(HEARTBEAT, lambda ctx: HeartbeatMonitor(ctx, ids))

    t0 = time.perf_counter()
    cluster = SimCluster(seed, ids, build)
    cluster.run_until(sim_seconds)
    return time.perf_counter() - t0
