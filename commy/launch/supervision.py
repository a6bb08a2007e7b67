"""The director's bookkeeping, free of thespian: which node runs where, in what state, restarted how often.

Each configured node has a `NodeRecord` whose `state` moves only through `NodeRecord.move`, along
`TRANSITIONS`:

    WAITING --(its host's actor system registered)--> STARTING --(NodeReady)--> READY
    STARTING / READY --(exit notice, start failure, lost by membership)--> BACKOFF --(delay)--> STARTING
    STARTING --(a start failure no retry can mend: the host's configuration is wrong)--> FAILED
    STARTING / READY --(stop)--> STOPPING --(stopped, or exit notice)--> STOPPED

Every start gets a new `generation`; a message about an older one (a second `ChildActorExited`
for the same exit -- thespian sends two on TCP --, a late `NodeReady`) changes nothing. The delay
before a restart doubles from `restart_min` up to `restart_max` while a node keeps dying, and
starts over once it stayed up `STABLE` seconds. Times are the caller's (`now` arguments), so the
director's tests drive it without a clock.

Thespian delivers no exit notice for an actor whose whole actor system died (a crashed machine);
then commy's own failure detection speaks: `lost_by_membership` names a ready node that missed a
status poll it was asked while most of the nodes that answered see it DOWN.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from commy.launch.control import NodeReady, NodeRow, NodeStatus, StartNode
from commy.runtime.backoff import Backoff

STABLE = 10.0  # seconds up after which a node's next death restarts it at restart_min again


class NodeState(enum.Enum):
    WAITING = "waiting"  # its host's actor system has not registered with the leader yet
    STARTING = "starting"
    READY = "ready"
    BACKOFF = "restarting"  # died or failed to start; a restart is scheduled
    FAILED = "failed"  # cannot start on its host until the configuration is mended (then launch again)
    STOPPING = "stopping"
    STOPPED = "stopped"


S = NodeState
TRANSITIONS: Mapping[NodeState, frozenset[NodeState]] = {
    S.WAITING: frozenset({S.STARTING, S.STOPPED}),
    S.STARTING: frozenset({S.READY, S.BACKOFF, S.FAILED, S.STOPPING}),
    S.READY: frozenset({S.BACKOFF, S.STOPPING}),
    S.BACKOFF: frozenset({S.STARTING, S.WAITING, S.STOPPED}),
    S.FAILED: frozenset({S.STOPPED}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.STOPPED: frozenset(),
}
RUNNING = frozenset({S.STARTING, S.READY})  # a node actor exists for these


class SupervisionError(RuntimeError):
    """A transition the table does not allow: a bug in the director, never a remote's doing."""


@dataclass
class NodeRecord:
    node_id: str
    host: str
    backoff: Backoff
    state: NodeState = NodeState.WAITING
    generation: int = 0
    restarts: int = 0
    ready_at: float | None = None
    pid: int = 0
    url: str = ""
    peer: str = ""
    detail: str = ""

    def move(self, to: NodeState) -> None:
        if to not in TRANSITIONS[self.state]:
            raise SupervisionError(f"node {self.node_id}: {self.state.value} -> {to.value} is not a transition")
        self.state = to


@dataclass
class Supervisor:
    cluster: str
    config_path: str
    records: dict[str, NodeRecord] = field(default_factory=dict)
    hosts_up: set[str] = field(default_factory=set)

    @classmethod
    def build(cls, cluster: str, config_path: str, nodes: Iterable[tuple[str, str]], *, restart_min: float,
              restart_max: float, rng: random.Random) -> Supervisor:
        """`nodes`: (node id, host name) pairs, in configuration order."""
        sup = cls(cluster, config_path)
        for node_id, host in nodes:
            sup.records[node_id] = NodeRecord(node_id, host, Backoff(rng, restart_min, restart_max, jitter=0.25))
        return sup

    def on_host(self, host: str) -> list[NodeRecord]:
        return [r for r in self.records.values() if r.host == host]

    # ---- starting

    def host_changed(self, host: str, up: bool) -> list[str]:
        """A host's actor system registered (or left): the nodes to start there now."""
        if not up:
            self.hosts_up.discard(host)
            return []
        self.hosts_up.add(host)
        return [r.node_id for r in self.on_host(host) if r.state is S.WAITING]

    def running_on(self, host: str) -> list[tuple[str, int]]:
        """(node id, generation) of the nodes with an actor on `host` -- all lost if the host left."""
        return [(r.node_id, r.generation) for r in self.on_host(host) if r.state in RUNNING]

    def start(self, node_id: str) -> StartNode:
        r = self.records[node_id]
        if r.generation > 0:  # every start but the first, whether it waited in BACKOFF or for its host
            r.restarts += 1
        r.move(S.STARTING)
        r.generation += 1
        r.pid, r.url, r.peer, r.ready_at = 0, "", "", None
        return StartNode(node_id, r.generation, self.cluster, self.config_path)

    def ready(self, msg: NodeReady, now: float) -> bool:
        r = self.records.get(msg.node_id)
        if r is None or msg.generation != r.generation or r.state is not S.STARTING:
            return False
        r.move(S.READY)
        r.ready_at, r.pid, r.url, r.peer = now, msg.pid, msg.url, msg.peer  # detail: the last failure stays
        return True

    # ---- dying and restarting

    def exited(self, node_id: str, generation: int, now: float, detail: str) -> float | None:
        """The node's actor ended (or could not start): the delay before its restart, or None when
        there is nothing to do -- an older generation, a duplicate notice, an expected stop."""
        r = self.records.get(node_id)
        if r is None or generation != r.generation:
            return None
        if r.state is S.STOPPING:
            r.move(S.STOPPED)
            return None
        if r.state not in RUNNING:
            return None
        if r.ready_at is not None and now - r.ready_at >= STABLE:
            r.backoff.reset()
        r.move(S.BACKOFF)
        r.detail = detail
        return r.backoff.next()

    def failed_for_good(self, node_id: str, generation: int, detail: str) -> bool:
        """A start failed in a way no retry mends (a wrong configuration on its host): no restart."""
        r = self.records.get(node_id)
        if r is None or generation != r.generation or r.state is not S.STARTING:
            return False
        r.move(S.FAILED)
        r.detail = detail
        return True

    def due(self, node_id: str, generation: int) -> bool:
        """The backoff of this generation ran out: start the node again now? (If its host is not
        registered any more, it waits for the host instead.)"""
        r = self.records.get(node_id)
        if r is None or r.generation != generation or r.state is not S.BACKOFF:
            return False
        if r.host not in self.hosts_up:
            r.move(S.WAITING)
            return False
        return True

    def pollable(self) -> dict[str, int]:
        """The nodes a status poll asks now (the ready ones): node id -> generation."""
        return {r.node_id: r.generation for r in self.records.values() if r.state is S.READY}

    def lost_by_membership(self, asked: Mapping[str, int],
                           answers: Mapping[str, NodeStatus]) -> list[tuple[str, int]]:
        """Nodes this poll asked (still ready, same generation) that did not answer and that most
        answering nodes see DOWN. A node that became ready after the poll began is not judged: its
        peers may well still see its previous life DOWN."""
        lost = []
        for r in self.records.values():
            if (r.state is not S.READY or asked.get(r.node_id) != r.generation or r.node_id in answers
                    or not answers):
                continue
            views = [dict(s.peers).get(r.node_id) for s in answers.values()]
            if sum(v == "down" for v in views) * 2 > len(views):
                lost.append((r.node_id, r.generation))
        return lost

    # ---- stopping

    def stop_all(self) -> list[tuple[str, int]]:
        """Every node stops: those with an actor get (node id, generation) back to be told."""
        told = []
        for r in self.records.values():
            if r.state in RUNNING:
                r.move(S.STOPPING)
                told.append((r.node_id, r.generation))
            elif r.state in (S.WAITING, S.BACKOFF, S.FAILED):
                r.move(S.STOPPED)
        return told

    def stopped(self, node_id: str, generation: int) -> None:
        r = self.records.get(node_id)
        if r is not None and r.generation == generation and r.state is S.STOPPING:
            r.move(S.STOPPED)

    # ---- reading

    def settled(self, hosts: Sequence[str] = ()) -> bool:
        """Every node (of `hosts`, when given) ready -- or failed for good, which waiting cannot mend."""
        return all(r.state in (S.READY, S.FAILED) for r in self.records.values() if not hosts or r.host in hosts)

    def all_stopped(self) -> bool:
        return all(r.state is S.STOPPED for r in self.records.values())

    def rows(self, answers: Mapping[str, NodeStatus], now: float) -> tuple[NodeRow, ...]:
        out = []
        for r in self.records.values():
            s = answers.get(r.node_id)
            uptime = now - r.ready_at if r.ready_at is not None and r.state is S.READY else 0.0
            out.append(NodeRow(
                r.node_id, r.host, r.state.value, r.restarts, r.pid, r.url, r.peer, round(uptime, 1),
                s.clients if s else -1, s.services if s else -1, s.lag_p99_ms if s else -1.0,
                s.peers if s else (), r.detail))
        return tuple(out)
