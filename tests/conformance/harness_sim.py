"""`SimHarness`: the conformance `Harness` over the deterministic simulator.

Every node hosts a `Probe` named `PROBE`; messages travel as bytes through the simulated network
(codec, framing and link checks in flight), link events come from the simulated connections, and
`run_until` advances virtual time, so a timeout of seconds costs milliseconds. A rogue connection
is processed at once, through the network's real accepting handshake: its answer is in
`rogue_received()` as soon as `inject_raw` returns.
"""

from __future__ import annotations

from collections.abc import Callable

from commy.core.node import Node
from commy.framing import DEFAULT_MAX_FRAME
from commy.messages import Address, Message
from sim.cluster import SimCluster
from tests.conformance.harness import PROBE, Probe


class SimHarness:
    name = "sim"

    def __init__(self, seed: int = 1) -> None:
        self.seed = seed
        self._cluster: SimCluster | None = None

    @property
    def cluster(self) -> SimCluster:
        assert self._cluster is not None, "start() first"
        return self._cluster

    def start(self, nodes: list[str], *, max_frame: int | None = None) -> None:
        def build(node: Node) -> None:
            node.spawn(PROBE, Probe)

        self._cluster = SimCluster(self.seed, nodes, build, max_frame=max_frame or DEFAULT_MAX_FRAME)

    def send(self, src: str, dst: str, body: Message) -> None:
        self.cluster.node(src).send(Address(src, PROBE), Address(dst, PROBE), body, None)

    def probe(self, node: str) -> Probe:
        actor = self.cluster.node(node).actors[PROBE]
        assert isinstance(actor, Probe)
        return actor

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        self.cluster.run_until_condition(done, timeout)
        return bool(done())

    def break_link(self, a: str, b: str) -> None:
        self.cluster.break_link(a, b)

    def inject_raw(self, dst: str, data: bytes, *, hello_as: str | None = None, secret: bytes | None = None) -> None:
        self.cluster.network.inject_raw(dst, data, hello_as=hello_as, secret=secret)

    def rogue_received(self) -> bytes:
        return bytes(self.cluster.network.rogue_out)

    def stop(self) -> None:
        self._cluster = None
