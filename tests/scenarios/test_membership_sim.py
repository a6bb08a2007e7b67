"""Dynamic membership in the simulator: 5 nodes that start knowing only the seed n1.

Each node runs a heartbeat monitor with no static peers and a membership actor whose one seed is
n1. They must all find each other and be HEALTHY within 3 s; a graceful leave must be seen as
LEFT (never DOWN) by everyone; a node restarted as a new incarnation (after a leave, after a
crash, or the seed itself, whose only seed is itself) must be back in every table.
"""

from __future__ import annotations

import pytest

from commy.core.heartbeat import HEARTBEAT, HeartbeatMonitor
from commy.core.members import MEMBERSHIP, Membership
from commy.core.node import Node
from commy.messages import Leave, MemberInfo
from sim.checkers import Checker, NoDeadLetters, NoFalseDown, peer_change, peer_state
from sim.cluster import SimCluster
from sim.network import LinkConfig
from sim.trace import Row

IDS = [f"n{i}" for i in range(1, 6)]
LOSSY = LinkConfig(latency=0.060, jitter=0.050, loss=0.05)


def info(node_id: str, incarnation: int) -> MemberInfo:
    index = int(node_id[1:])
    return MemberInfo(node_id, index, "10.0.0.1", 7000 + index, f"ws://{node_id}", incarnation)


def build(node: Node) -> None:
    me = info(node.node_id, node.host.incarnation)  # type: ignore[attr-defined]
    node.spawn(HEARTBEAT, lambda ctx: HeartbeatMonitor(ctx, []))
    node.spawn(MEMBERSHIP, lambda ctx: Membership(ctx, me, [info("n1", 0)]))


class Downs(Checker):
    """Records every (time, observer, peer) DOWN, for the leave check."""

    name = "downs"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[float, str, str]] = []

    def on_event(self, row: Row) -> None:
        change = peer_change(row)
        if change is not None and change[2] == "down":
            self.seen.append((row[0], row[1], change[0]))


def start(seed: int, net: LinkConfig = LinkConfig()) -> tuple[SimCluster, Downs]:
    downs = Downs()
    return SimCluster(seed, IDS, build, net=net, checkers=[NoDeadLetters(), NoFalseDown(), downs]), downs


def membership(c: SimCluster, node: str) -> Membership:
    actor = c.node(node).actors[MEMBERSHIP]
    assert isinstance(actor, Membership)
    return actor


def converged(c: SimCluster, nodes: list[str] | None = None) -> bool:
    """Every running node knows every other (at its current incarnation) and sees it HEALTHY."""
    live = nodes or [n for n in IDS if c.running(n)]
    return all(
        (m := membership(c, a).members.get(b)) is not None and m.incarnation == c.incarnations[b]
        and peer_state(c, a, b) == "healthy"
        for a in live for b in live if a != b
    )


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_five_nodes_find_each_other_through_one_seed_within_3_s(seed: int) -> None:
    c, _ = start(seed)
    assert c.run_until_condition(lambda: converged(c), 3.0), f"not converged (seed {seed})"
    c.run_for(5.0)
    assert converged(c) and c.violations == []
    assert all(not membership(c, n)._timer for n in IDS)  # everyone confirmed: no more join traffic


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_they_also_converge_over_a_lossy_jittery_network(seed: int) -> None:
    c, downs = start(seed, LOSSY)
    assert c.run_until_condition(lambda: converged(c), 3.0), f"not converged (seed {seed})"
    c.run_for(10.0)
    # (At 5% loss a peer is now and then SUSPECTED for a round: the tables are what must hold.)
    assert all(set(membership(c, n).members) == set(IDS) - {n} for n in IDS)
    assert c.violations == [] and downs.seen == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_graceful_leave_is_left_everywhere_never_down_and_the_node_can_rejoin(seed: int) -> None:
    c, downs = start(seed)
    assert c.run_until_condition(lambda: converged(c), 3.0)
    c.node("n5").publish(Leave())
    c.run_for(0.2)
    c.crash("n5")  # the shutdown that follows the announcement
    c.run_for(5.0)
    assert all(peer_state(c, n, "n5") == "left" and membership(c, n).left == {"n5": 1} for n in IDS[:4])
    assert downs.seen == [] and converged(c, IDS[:4])
    c.restart("n5")
    assert c.run_until_condition(lambda: converged(c), 3.0), "n5 did not rejoin"
    assert all(membership(c, n).members["n5"].incarnation == 2 and not membership(c, n).left for n in IDS[:4])
    assert downs.seen == [] and c.violations == []


@pytest.mark.parametrize("victim", ["n3", "n1"])
def test_a_crashed_node_is_down_then_rejoins_as_a_new_incarnation(victim: str) -> None:
    # n1 is the seed of everyone, itself included: restarted, it knows nobody until the others,
    # seeing it come back from DOWN, ask it again.
    c, downs = start(7)
    assert c.run_until_condition(lambda: converged(c), 3.0)
    c.crash(victim)
    c.run_for(3.0)
    assert {(obs, peer) for _, obs, peer in downs.seen} == {(n, victim) for n in IDS if n != victim}
    c.restart(victim)
    assert c.run_until_condition(lambda: converged(c), 3.0), f"{victim} did not rejoin"
    assert c.incarnations[victim] == 2 and c.violations == []
