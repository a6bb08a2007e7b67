"""Hypothesis drives a heartbeat cluster through crashes, restarts, partitions, pauses and time.

The model is small: which nodes are crashed (and since when), which are paused, and since when
each running node has been running. After every time step, a node crashed for more than 2 s must
be DOWN in the view of every node that has been running for more than 2 s of that time. The
safety checkers (no false DOWN, timely detection, no dead letters) watch every event. At the end
everything is healed, restarted and resumed, and after 3 s of quiet every node must see every
other HEALTHY. A failure shows the rule sequence (shrunk) and the cluster seed.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from commy.core.heartbeat import HEARTBEAT, HeartbeatMonitor
from commy.core.node import Node
from sim.checkers import DETECTION_BOUND, DownDetection, NoDeadLetters, NoFalseDown, peer_state
from sim.cluster import SimCluster
from tests.helpers import sweep_size

QUIESCE = 3.0


class HeartbeatMachine(RuleBasedStateMachine):
    cluster: SimCluster

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.crashed_at: dict[str, float] = {}
        self.up_since: dict[str, float] = {}
        self.paused: set[str] = set()

    @initialize(seed=st.integers(0, 2**32 - 1), size=st.integers(3, 5))
    def start(self, seed: int, size: int) -> None:
        self.seed = seed
        self.ids = [f"n{i}" for i in range(1, size + 1)]
        ids = self.ids

        def build(node: Node) -> None:
            node.spawn(HEARTBEAT, lambda ctx: HeartbeatMonitor(ctx, ids))

        self.cluster = SimCluster(seed, ids, build, checkers=[NoDeadLetters(), NoFalseDown(), DownDetection()])
        self.up_since = dict.fromkeys(ids, 0.0)

    def pick(self, i: int) -> str:
        return self.ids[i % len(self.ids)]

    def where(self) -> str:
        return f"(cluster seed {self.seed}, t={self.cluster.now:.3f}s)"

    # ---- rules

    @rule(i=st.integers(0, 4))
    def crash(self, i: int) -> None:
        node = self.pick(i)
        if node not in self.crashed_at:
            self.cluster.crash(node)
            self.crashed_at[node] = self.cluster.now
            self.paused.discard(node)

    @rule(i=st.integers(0, 4))
    def restart(self, i: int) -> None:
        node = self.pick(i)
        if node in self.crashed_at:
            self.cluster.restart(node)
            del self.crashed_at[node]
            self.up_since[node] = self.cluster.now

    @rule(i=st.integers(0, 4))
    def pause(self, i: int) -> None:
        node = self.pick(i)
        if node not in self.crashed_at:
            self.cluster.pause(node)
            self.paused.add(node)

    @rule(i=st.integers(0, 4))
    def resume(self, i: int) -> None:
        node = self.pick(i)
        if node in self.paused:
            self.cluster.resume(node)
            self.paused.discard(node)
            self.up_since[node] = self.cluster.now

    @rule(mask=st.integers(1, 30), kind=st.sampled_from(["symmetric", "one-way", "bridge"]))
    def partition(self, mask: int, kind: str) -> None:
        left = [n for k, n in enumerate(self.ids) if mask >> k & 1]
        right = [n for n in self.ids if n not in left]
        if not right:
            return
        if kind == "symmetric":
            self.cluster.partition(left, right)
        elif kind == "one-way":
            self.cluster.partition_one_way(left, right)
        else:
            self.cluster.bridge(left, right[1:])  # right[0] bridges the two sides

    @rule()
    def heal(self) -> None:
        self.cluster.heal()

    @rule(dt=st.floats(0.05, 3.0))
    def step(self, dt: float) -> None:
        self.cluster.run_for(dt)
        self.check_crashed_nodes_are_down()

    # ---- checks against the model

    def check_crashed_nodes_are_down(self) -> None:
        now = self.cluster.now
        for victim, since in self.crashed_at.items():
            for observer in self.ids:
                if observer in self.crashed_at or observer in self.paused:
                    continue
                watched_from = max(since, self.up_since[observer])
                if now - watched_from > DETECTION_BOUND:
                    state = peer_state(self.cluster, observer, victim)
                    assert state == "down", (
                        f"{observer} sees {victim} {state}, crashed at {since:.3f}s {self.where()}"
                    )

    @invariant()
    def checkers_are_quiet(self) -> None:
        if self.ids:
            assert self.cluster.violations == [], f"{self.cluster.violations} {self.where()}"

    def teardown(self) -> None:
        if not self.ids:
            return
        c = self.cluster
        for node in list(self.crashed_at):
            c.restart(node)
        c.heal_and_quiesce(QUIESCE)
        for a in self.ids:
            for b in self.ids:
                if a != b:
                    assert peer_state(c, a, b) == "healthy", f"{a} sees {b} {peer_state(c, a, b)} {self.where()}"
        assert c.violations == [], f"{c.violations} {self.where()}"


HeartbeatMachine.TestCase.settings = settings(
    max_examples=sweep_size(40, 1000), stateful_step_count=sweep_size(30, 60), deadline=None
)
TestHeartbeatMachine = HeartbeatMachine.TestCase
