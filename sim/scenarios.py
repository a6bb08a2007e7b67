"""Named scenarios: a cluster of heartbeat monitors, a fault plan, checkers, a timeline, a hash.

Every scenario runs N nodes `n1..nN`, each with a `HeartbeatMonitor` (default `HeartbeatConfig`)
named `heartbeat`, on a network whose settings the scenario picks. Its plan schedules faults
inside `[0, duration - QUIESCE]`; the last `QUIESCE` seconds are the heal-and-quiesce phase
(partitions healed, paused nodes resumed) after which the liveness checks run. So a run lasts
exactly `duration` simulated seconds, and `commy sim run NAME --seed N --nodes K --duration S`
replays it event for event.

Add a scenario with `@scenario(name, description, nodes=..., duration=...)` on a plan function
`(cluster, duration) -> None`. A scenario may bring its own application instead of the bare
heartbeat monitors: `app=factory`, where `factory(node_ids, seed)` returns a `ScenarioApp` that
builds each node, supplies the checkers, starts its clients once the cluster exists (the plan
finds it as `cluster.app`) and reports failover times and metrics for the result. The cluster
scenarios (`sim.cluster_scenarios`, full commy nodes with clients) are registered that way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from commy.core.heartbeat import HEARTBEAT, HeartbeatMonitor
from commy.core.node import Node
from sim.checkers import DETECTION_BOUND, Checker, DownDetection, heartbeat_checkers, peer_state
from sim.cluster import SimCluster
from sim.network import LinkConfig
from sim.timeline import Timeline

QUIESCE = 3.0

Plan = Callable[[SimCluster, float], None]


class ScenarioApp(Protocol):
    """An application a scenario runs on its nodes (see `sim.app.SimApp`)."""

    checkers: list[Checker]

    def build(self, node: Node) -> None: ...
    def start(self, cluster: SimCluster, duration: float, timeline: Timeline) -> None: ...
    def failover_times(self) -> list[float]: ...
    def metrics(self) -> dict[str, list[float]]: ...
    def describe(self) -> str: ...


AppFactory = Callable[[list[str], int], ScenarioApp]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    plan: Plan
    nodes: int
    duration: float
    net: LinkConfig
    min_nodes: int
    min_duration: float
    app: AppFactory | None = None


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    seed: int
    nodes: int
    duration: float
    timeline: list[str]
    violations: list[str]
    trace_hash: str
    delivered: int
    events: int
    replay_command: str
    detection_times: list[tuple[str, str, float, float]]
    """(observer, peer, fault time, seconds until the observer saw the peer DOWN)"""
    failover_times: list[float] = field(default_factory=list)
    """seconds from a node's failure until its clients worked again elsewhere (cluster scenarios)"""
    metrics: dict[str, list[float]] = field(default_factory=dict)
    """named samples (e.g. "replication_lag" in seconds) that `commy sim sweep` pools into percentiles"""

    @property
    def ok(self) -> bool:
        return not self.violations


_REGISTRY: dict[str, Scenario] = {}


def scenario(
    name: str,
    description: str,
    *,
    nodes: int = 3,
    duration: float = 10.0,
    net: LinkConfig = LinkConfig(),
    min_nodes: int = 2,
    min_duration: float = QUIESCE + 3.0,
    app: AppFactory | None = None,
) -> Callable[[Plan], Plan]:
    def register(plan: Plan) -> Plan:
        if name in _REGISTRY:
            raise ValueError(f"scenario {name!r} registered twice")
        _REGISTRY[name] = Scenario(name, description, plan, nodes, duration, net, min_nodes, min_duration, app)
        return plan

    return register


def list_scenarios() -> list[tuple[str, str]]:
    return [(s.name, s.description) for s in _REGISTRY.values()]


def get_scenario(name: str) -> Scenario:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(_REGISTRY)}") from None


def resolve(name: str, nodes: int | None = None, duration: float | None = None) -> tuple[Scenario, int, float]:
    """The scenario and the size and duration a run will use; ValueError names what is wrong.

    `run_scenario` calls it, and `commy sim sweep` too, before starting any worker.
    """
    sc = get_scenario(name)
    n = sc.nodes if nodes is None else nodes
    d = sc.duration if duration is None else float(duration)
    if n < sc.min_nodes:
        raise ValueError(f"scenario {name} needs at least {sc.min_nodes} nodes, got {n}")
    if not d >= sc.min_duration:
        raise ValueError(f"scenario {name} needs a duration of at least {sc.min_duration:g} s, got {d:g}")
    return sc, n, d


def replay_command(name: str, seed: int, nodes: int, duration: float) -> str:
    return f"commy sim run {name} --seed {seed} --nodes {nodes} --duration {duration:g}"


def _describe_net(cfg: LinkConfig) -> str:
    text = f"latency {cfg.latency * 1000:g} ms ± {cfg.jitter * 1000:g} ms ({cfg.distribution})"
    for name in ("loss", "duplicate", "reorder"):
        p = getattr(cfg, name)
        if p:
            text += f", {name} {p * 100:g}%"
    return text


def _end_line(cluster: SimCluster) -> str:
    running = [n for n in cluster.node_ids if cluster.running(n)]
    crashed = [n for n in cluster.node_ids if not cluster.alive(n)]
    unhealthy = [f"{a} sees {b} {str(peer_state(cluster, a, b)).upper()}"
                 for a in running for b in cluster.node_ids if a != b and peer_state(cluster, a, b) != "healthy"]
    text = f"end: {len(running)} of {len(cluster.node_ids)} nodes running"
    if crashed:
        text += f" (crashed: {', '.join(crashed)})"
    return text + ("; " + ", ".join(unhealthy) if unhealthy else "; every running node sees every peer HEALTHY")


def run_scenario(
    name: str,
    *,
    seed: int,
    nodes: int | None = None,
    duration: float | None = None,
    on_cluster: Callable[[SimCluster], None] | None = None,
) -> ScenarioResult:
    """Run a scenario; `on_cluster(cluster)` is called before the run (to subscribe to its trace)."""
    sc, n, d = resolve(name, nodes, duration)
    ids = [f"n{i}" for i in range(1, n + 1)]

    def build(node: Node) -> None:
        node.spawn(HEARTBEAT, lambda ctx: HeartbeatMonitor(ctx, ids))

    app = sc.app(ids, seed) if sc.app is not None else None
    checkers = heartbeat_checkers() if app is None else app.checkers
    cluster = SimCluster(seed, ids, build if app is None else app.build, net=sc.net, checkers=checkers)
    timeline = Timeline(cluster.trace, ids)
    timeline.add(0.0, f"start: {n} nodes ({ids[0]}..{ids[-1]}), {_describe_net(sc.net)}")
    if on_cluster is not None:
        on_cluster(cluster)
    if app is not None:
        app.start(cluster, d, timeline)
    sc.plan(cluster, d)
    cluster.run_until(d - QUIESCE)
    cluster.heal_and_quiesce(QUIESCE)
    detections = next((c.detections for c in checkers if isinstance(c, DownDetection)), [])
    if app is not None:
        timeline.add(cluster.now, app.describe())
    return ScenarioResult(
        name=name, seed=seed, nodes=n, duration=d,
        timeline=timeline.lines(end=(cluster.now, _end_line(cluster))),
        violations=cluster.violations, trace_hash=cluster.trace.hash, delivered=cluster.delivered,
        events=cluster.trace.count, replay_command=replay_command(name, seed, n, d),
        detection_times=list(detections),
        failover_times=app.failover_times() if app is not None else [],
        metrics=app.metrics() if app is not None else {},
    )


# --------------------------------------------------------------------------- the scenarios


def _fault_time(duration: float, preferred: float) -> float:
    """`preferred`, or earlier when the run is short: detection must fit before the quiesce phase."""
    return min(preferred, duration - QUIESCE - DETECTION_BOUND)


@scenario(
    "heartbeat-steady",
    "no faults but a lossy, jittery network (5% loss, 60 ms ± 50 ms): nobody is ever marked DOWN",
    nodes=5, duration=30.0, net=LinkConfig(latency=0.060, jitter=0.050, loss=0.05),
)
def _steady(cluster: SimCluster, duration: float) -> None:
    pass


@scenario("heartbeat-crash", "one node crashes at 5 s; every other node sees it DOWN within 2 s")
def _crash(cluster: SimCluster, duration: float) -> None:
    cluster.schedule(_fault_time(duration, 5.0), "crash", cluster.node_ids[-1])


@scenario(
    "heartbeat-partition",
    "{n1} | {the rest} at 3 s: both sides see the other DOWN; after the heal all are HEALTHY again",
    duration=15.0,
)
def _partition(cluster: SimCluster, duration: float) -> None:
    cluster.schedule(_fault_time(duration, 3.0), "partition", [cluster.node_ids[0]])


@scenario(
    "heartbeat-restart", "the last node crashes at 3 s and restarts at 6 s; it rejoins as HEALTHY",
    min_duration=QUIESCE + DETECTION_BOUND + 2.0,
)
def _restart(cluster: SimCluster, duration: float) -> None:
    _outage(cluster, duration, "crash", "restart")


@scenario(
    "heartbeat-pause", "the last node freezes at 3 s for 3 s (a long GC pause): DOWN, then HEALTHY again",
    min_duration=QUIESCE + DETECTION_BOUND + 2.0,
)
def _pause(cluster: SimCluster, duration: float) -> None:
    _outage(cluster, duration, "pause", "resume")


def _outage(cluster: SimCluster, duration: float, stop: str, start: str) -> None:
    """The last node stops at 3 s (earlier in a short run) and starts again once it is seen DOWN."""
    at = min(3.0, duration - QUIESCE - DETECTION_BOUND - 1.0)
    victim = cluster.node_ids[-1]
    cluster.schedule(at, stop, victim)
    cluster.schedule(at + DETECTION_BOUND + 1.0, start, victim)


@scenario(
    "heartbeat-chaos",
    "random crashes, restarts, pauses, partitions of every kind, broken links, clock jumps; 1% loss, dup, reorder",
    nodes=5, duration=30.0, net=LinkConfig(latency=0.002, jitter=0.001, loss=0.01, duplicate=0.01, reorder=0.01),
    min_nodes=3,
)
def _chaos(cluster: SimCluster, duration: float) -> None:
    from sim.chaos import plan_chaos

    plan_chaos(cluster, until=duration - QUIESCE)


# The cluster scenarios (full nodes with clients) register themselves with `@scenario` too.
import sim.cluster_scenarios  # noqa: E402, F401  (after everything they import from here)
