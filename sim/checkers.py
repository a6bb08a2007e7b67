"""Invariant checkers: a hook on every trace row (safety) and one after heal-and-quiesce (liveness).

A checker is attached to a `SimCluster`, gets every row as it is recorded (`on_event`), may read
the cluster's live state (who runs, who can reach whom, the heartbeat monitors' peer tables), and
gets `at_end` once the run has healed every partition, resumed every paused node and quiesced.
Violations are plain strings that say when and what.

The heartbeat checkers know the monitor's defaults: a peer is DOWN after 5 unanswered rounds of
0.3 s, so a crash or a cut must be seen within `DETECTION_BOUND` (2.0 s), and a DOWN is false only
if the two nodes could talk for the whole window before it (`GRACE`, also 2.0 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from commy.core.heartbeat import HEARTBEAT, HeartbeatMonitor
from sim.trace import Row

if TYPE_CHECKING:
    from sim.cluster import SimCluster

DETECTION_BOUND = 2.0
GRACE = 2.0

NODE_FAULTS = frozenset({"crash", "restart", "pause", "resume"})
NET_FAULTS = frozenset({"partition", "partition_one_way", "bridge", "heal", "configure"})
PARTITIONS = frozenset({"partition", "partition_one_way", "bridge"})


def peer_state(cluster: SimCluster, observer: str, peer: str) -> str | None:
    """`observer`'s heartbeat view of `peer` ("healthy", "down", ...), or None if it has none."""
    host = cluster.hosts[observer]
    if not host.alive:
        return None
    monitor = host.node.actors.get(HEARTBEAT)
    if not isinstance(monitor, HeartbeatMonitor):
        return None
    view = monitor.table.views.get(peer)
    return None if view is None else view.state.value


def peer_change(row: Row) -> tuple[str, str, str] | None:
    """(peer, old, new) if the row is a heartbeat `peer_state` log record."""
    if row[3] != "log:peer_state":
        return None
    fields: dict[str, Any] = row[4][1]
    return str(fields["peer"]), str(fields["old"]), str(fields["new"])


class Checker:
    """Base: override `on_event` and/or `at_end`; report with `violate`."""

    name = "checker"

    def __init__(self) -> None:
        self.violations: list[str] = []
        self._cluster: SimCluster | None = None

    @property
    def cluster(self) -> SimCluster:
        assert self._cluster is not None, "checker not attached"
        return self._cluster

    def attach(self, cluster: SimCluster) -> None:
        self._cluster = cluster

    def on_event(self, row: Row) -> None:
        """Called for every trace row, in order (safety checks)."""

    def at_end(self) -> None:
        """Called once after heal-and-quiesce (liveness checks)."""

    def violate(self, text: str) -> None:
        self.violations.append(f"{self.name}: {text}")


class NoDeadLetters(Checker):
    name = "no-dead-letters"

    def on_event(self, row: Row) -> None:
        if row[3] == "dead":
            t, node, actor, _, (mtype, sender, _msg_id) = row
            self.violate(f"{t:.3f}s {node}/{actor} had no handler for {mtype} from {sender}")


class NoFalseDown(Checker):
    """A running node never marks DOWN a peer it could reach, undisturbed, for the last GRACE s."""

    name = "no-false-down"

    def __init__(self, grace: float = GRACE) -> None:
        super().__init__()
        self.grace = grace
        self._calm_since: dict[tuple[str, str], float] = {}  # pair -> last fault touching it

    def _pair(self, a: str, b: str) -> tuple[str, str]:
        return (a, b) if a < b else (b, a)

    def on_event(self, row: Row) -> None:
        t, node, _, event, detail = row
        if event in NODE_FAULTS:
            for other in self.cluster.node_ids:
                if other != node:
                    self._calm_since[self._pair(node, other)] = t
        elif event in NET_FAULTS:
            for a in self.cluster.node_ids:
                for b in self.cluster.node_ids:
                    if a < b:
                        self._calm_since[a, b] = t
        elif event == "break_link":
            self._calm_since[self._pair(node, detail)] = t
        elif event == "link_error":
            self._calm_since[self._pair(node, detail[0])] = t
        else:
            change = peer_change(row)
            if change is None or change[2] != "down":
                return
            peer = change[0]
            since = self._calm_since.get(self._pair(node, peer))
            if self.cluster.reachable(node, peer) and (since is None or t - since > self.grace):
                calm = "the start" if since is None else f"{since:.3f}s"
                self.violate(f"{t:.3f}s {node} marked {peer} DOWN, but they could talk since {calm}")


class DownDetection(Checker):
    """A crashed or cut-off peer is DOWN for every running node within `bound` seconds.

    Expectations start at a crash (every running node must see the victim DOWN) or a partition
    (the receiving end of every wire it cuts); they are withdrawn when the observer crashes, pauses or
    restarts, when the victim restarts, or (for a partition) at heal. `detections` keeps
    (observer, peer, since, latency) for each one met.
    """

    name = "down-detection"

    def __init__(self, bound: float = DETECTION_BOUND) -> None:
        super().__init__()
        self.bound = bound
        self.detections: list[tuple[str, str, float, float]] = []
        self._expect: dict[tuple[str, str], tuple[float, str]] = {}  # (observer, peer) -> (since, why)
        self._next_deadline = float("inf")

    def _add(self, observer: str, peer: str, t: float, why: str) -> None:
        c = self.cluster
        if (observer, peer) in self._expect or not c.running(observer) or peer_state(c, observer, peer) == "down":
            return
        self._expect[observer, peer] = (t, why)
        self._next_deadline = min(self._next_deadline, t + self.bound)

    def _withdraw(self, keep: Any) -> None:
        self._expect = {k: v for k, v in self._expect.items() if keep(k, v)}

    def on_event(self, row: Row) -> None:
        t, node, _, event, _ = row
        if t > self._next_deadline:
            self._expire(t)
        if event == "crash":
            self._withdraw(lambda k, v: k[0] != node)
            for other in self.cluster.node_ids:
                if other != node:
                    self._add(other, node, t, "crash")
        elif event in ("pause", "restart"):
            self._withdraw(lambda k, v: k[0] != node and (event == "pause" or k[1] != node))
        elif event == "heal":
            self._withdraw(lambda k, v: v[1] != "partition")
        elif event in PARTITIONS:
            # A node must notice a peer it can no longer *hear*: for a cut wire src -> dst, dst
            # must see src DOWN. (Across a one-way cut, src still hears dst's heartbeats and may
            # keep it HEALTHY; a symmetric cut blocks both wires, so both sides must notice.)
            for src, dst in self.cluster.network.blocked_pairs():
                if self.cluster.running(src):
                    self._add(dst, src, t, "partition")
        else:
            change = peer_change(row)
            if change is not None and change[2] == "down":
                found = self._expect.pop((node, change[0]), None)
                if found is not None:
                    self.detections.append((node, change[0], found[0], t - found[0]))

    def _expire(self, now: float) -> None:
        for (observer, peer), (since, why) in list(self._expect.items()):
            if now - since > self.bound:
                del self._expect[observer, peer]
                self.violate(f"{observer} did not see {peer} DOWN within {self.bound:g}s of the {why} at {since:.3f}s")
        self._next_deadline = min((s + self.bound for s, _ in self._expect.values()), default=float("inf"))

    def at_end(self) -> None:
        self._expire(self.cluster.now)


class AllHealthyAtEnd(Checker):
    """After heal and quiesce, every running node sees every other running node HEALTHY."""

    name = "all-healthy-at-end"

    def at_end(self) -> None:
        c = self.cluster
        live = [n for n in c.node_ids if c.running(n)]
        for a in live:
            for b in live:
                if a != b and (state := peer_state(c, a, b)) != "healthy":
                    self.violate(f"{c.now:.3f}s {a} sees {b} {str(state).upper()} after heal and quiesce")


def heartbeat_checkers() -> list[Checker]:
    return [NoDeadLetters(), NoFalseDown(), DownDetection(), AllHealthyAtEnd()]
