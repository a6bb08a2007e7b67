"""A random fault schedule, decided as the run goes, from the cluster's scenario stream.

Every 0.3-2 s (virtual) one fault is drawn, weighted, among those that make sense right now:
crash a running node (never the last one), restart a crashed one, pause one for 0.5-3 s, cut the
network (symmetric, one-way or bridge partition), heal, break a connection, or jump a clock.
Decisions read only the cluster's state and `cluster.rng`, so the same seed makes the same
schedule. At `until` every crashed node is restarted, so the quiesce phase sees a full cluster.
"""

from __future__ import annotations

from typing import Any

from sim.cluster import SimCluster

WEIGHTS = {
    "crash": 2, "restart": 3, "pause": 1, "partition": 1, "partition_one_way": 1, "bridge": 1, "heal": 3,
    "break_link": 1, "jump_clock": 1,
}


def _split(rng: Any, nodes: list[str]) -> tuple[list[str], list[str]]:
    k = rng.randint(1, len(nodes) - 1)
    left = sorted(rng.sample(nodes, k))
    return left, [n for n in nodes if n not in left]


def plan_chaos(cluster: SimCluster, until: float, start: float = 1.0) -> None:
    rng = cluster.rng
    ids = cluster.node_ids
    epoch = cluster.sched.epoch

    def possible() -> list[str]:
        alive = [n for n in ids if cluster.alive(n)]
        out = ["partition", "partition_one_way", "heal", "jump_clock"]
        if len(alive) > 1:
            out += ["crash", "break_link"]
        if len(alive) < len(ids):
            out.append("restart")
        if any(cluster.running(n) for n in ids):
            out.append("pause")
        if len(ids) >= 3:
            out.append("bridge")
        return sorted(out)

    def step(_: Any) -> None:
        now = cluster.now
        choices = possible()
        action = rng.choices(choices, weights=[WEIGHTS[c] for c in choices])[0]
        alive = [n for n in ids if cluster.alive(n)]
        if action == "crash":
            cluster.crash(rng.choice(alive))
        elif action == "restart":
            cluster.restart(rng.choice([n for n in ids if not cluster.alive(n)]))
        elif action == "pause":
            victim = rng.choice([n for n in ids if cluster.running(n)])
            cluster.pause(victim)
            cluster.schedule(min(until, now + rng.uniform(0.5, 3.0)), "resume", victim)
        elif action == "partition":
            cluster.partition(*_split(rng, ids))
        elif action == "partition_one_way":
            cluster.partition_one_way(*_split(rng, ids))
        elif action == "bridge":
            bridge = rng.choice(ids)
            cluster.bridge(*_split(rng, [n for n in ids if n != bridge]))
        elif action == "heal":
            cluster.heal()
        elif action == "break_link":
            a, b = rng.sample(alive, 2)
            cluster.break_link(a, b)
        else:
            cluster.jump_clock(rng.choice(ids), round(rng.uniform(-1.0, 1.0), 3))
        following = now + rng.uniform(0.3, 2.0)
        if following < until:
            cluster.sched.at(epoch + following, step)

    def recover(_: Any) -> None:
        for n in ids:
            if not cluster.alive(n):
                cluster.restart(n)

    cluster.sched.at(epoch + start, step)
    cluster.sched.at(epoch + until, recover)
