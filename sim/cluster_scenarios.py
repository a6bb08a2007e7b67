"""Cluster scenarios: full commy nodes (`sim.app`) with clients under load, faults, and the
application's checkers (`sim.cluster_checkers`) on top of the heartbeat ones.

Each is registered with `sim.scenarios.scenario(..., app=...)`: the app factory builds a `SimApp`
for the run (tenants, keys, clients writing with concern `replicated` every 0.1 s by default) and
the plan schedules faults -- at fixed times in a long enough run, pulled earlier in a short one --
all before the heal-and-quiesce phase. The load stops when that phase begins, so the final checks
judge a cluster at rest. `commy sim run NAME --seed N` replays any run exactly; results carry the
clients' failover times (losing a node -> session resumed elsewhere) and write/replication latency
samples for `commy sim sweep`.

"""

from __future__ import annotations

from commy.core.replication import ReplicationConfig
from sim.app import AppConfig, SimApp
from sim.checkers import DETECTION_BOUND
from sim.cluster import SimCluster
from sim.network import LinkConfig
from sim.scenarios import QUIESCE, AppFactory, scenario


def _app(**changes: object) -> AppFactory:
    config = AppConfig(**changes)  # type: ignore[arg-type]

    def factory(ids: list[str], seed: int) -> SimApp:
        return SimApp(ids, seed, config)

    return factory


def _at(duration: float, preferred: float, room: float = DETECTION_BOUND + 1.0) -> float:
    """`preferred`, or earlier in a short run, so that `room` seconds still fit before the quiesce phase."""
    return max(0.5, min(preferred, duration - QUIESCE - room))


def app_of(cluster: SimCluster) -> SimApp:
    app = cluster.app
    assert isinstance(app, SimApp), "a cluster scenario runs on a SimApp"
    return app


@scenario(
    "cluster-load",
    "full nodes, 2 tenants, writers at 10 writes/s with concern replicated, no faults: the throughput baseline",
    nodes=5, duration=20.0, app=_app(), min_nodes=2,
)
def _load(cluster: SimCluster, duration: float) -> None:
    pass


@scenario(
    "failover",
    "3 nodes under replicated writes; n1 (with clients) is killed at 5 s and stays down; its clients resume "
    "elsewhere; no acknowledged write is lost",
    nodes=3, duration=14.0, app=_app(), min_nodes=2, min_duration=QUIESCE + DETECTION_BOUND + 3.0,
)
def _failover(cluster: SimCluster, duration: float) -> None:
    cluster.schedule(_at(duration, 5.0), "crash", cluster.node_ids[0])


@scenario(
    "failover-wide",
    "5 nodes under replicated writes; n1 is killed at 5 s and stays down; its clients resume on nodes that may "
    "not hold their service yet",
    nodes=5, duration=14.0, app=_app(), min_nodes=3, min_duration=QUIESCE + DETECTION_BOUND + 3.0,
)
def _failover_wide(cluster: SimCluster, duration: float) -> None:
    cluster.schedule(_at(duration, 5.0), "crash", cluster.node_ids[0])


@scenario(
    "disk-loss",
    "3 nodes; n2 crashes at 4 s and loses its disk, restarts empty at 6 s and pulls its replicas back (values "
    "of 400 bytes, syncs over 1 KiB go as snapshots in 256-byte chunks, 1% loss)",
    nodes=3, duration=16.0, min_nodes=2, min_duration=QUIESCE + 6.0,
    net=LinkConfig(loss=0.01),
    app=_app(value_size=400, replication=ReplicationConfig(max_sync_bytes=1024, chunk_size=256)),
)
def _disk_loss(cluster: SimCluster, duration: float) -> None:
    app = app_of(cluster)
    victim = cluster.node_ids[1]
    at = _at(duration, 4.0, room=5.0)
    app.at(at, app.crash_losing_disk, victim)
    cluster.schedule(at + 2.0, "restart", victim)


@scenario(
    "partition-heal",
    "5 nodes; {n1, n2} | {n3, n4, n5} from 4 s for 5 s while both sides write (concerns replicated and "
    "quorum: refused on the minority); after the heal every holder converges (lww), no acknowledged write lost",
    nodes=5, duration=16.0, app=_app(concerns=("replicated", "quorum")), min_nodes=3,
)
def _partition(cluster: SimCluster, duration: float) -> None:
    ids = cluster.node_ids
    at = _at(duration, 4.0)
    cluster.schedule(at, "partition", ids[: len(ids) // 2 or 1])
    cluster.schedule(_heal_time(duration, at), "heal")


@scenario(
    "partition-one-way",
    "5 nodes; n1's messages to the others are lost (it still hears them) from 4 s for 5 s, then heal",
    nodes=5, duration=16.0, app=_app(), min_nodes=2,
)
def _one_way(cluster: SimCluster, duration: float) -> None:
    ids = cluster.node_ids
    at = _at(duration, 4.0)
    cluster.schedule(at, "partition_one_way", [ids[0]], ids[1:])
    cluster.schedule(_heal_time(duration, at), "heal")


@scenario(
    "partition-bridge",
    "5 nodes; n1 and n5 cannot talk to each other, the rest reach both (a bridge), from 4 s for 5 s, then heal",
    nodes=5, duration=16.0, app=_app(), min_nodes=3,
)
def _bridge(cluster: SimCluster, duration: float) -> None:
    ids = cluster.node_ids
    at = _at(duration, 4.0)
    cluster.schedule(at, "bridge", [ids[0]], [ids[-1]])
    cluster.schedule(_heal_time(duration, at), "heal")


def _heal_time(duration: float, cut_at: float) -> float:
    return max(cut_at + 0.5, min(cut_at + 5.0, duration - QUIESCE - 1.0))


@scenario(
    "rolling-restart",
    "3 nodes restarted one after the other (down 2 s each, disks kept) under replicated writes; clients "
    "follow, nothing acknowledged is lost",
    nodes=3, duration=20.0, app=_app(), min_nodes=2, min_duration=QUIESCE + 6.0,
)
def _rolling(cluster: SimCluster, duration: float) -> None:
    ids = cluster.node_ids
    span = duration - QUIESCE - 2.0  # the last node must be back with time to settle
    step = min(4.0, (span - 1.0) / len(ids))
    for i, n in enumerate(ids):
        at = 1.0 + i * step
        down = min(2.0, step * 0.6)
        cluster.schedule(at, "crash", n)
        cluster.schedule(at + down, "restart", n)


@scenario(
    "flaky-network",
    "3 nodes on a bad network (5 ms ± 4 ms, 2% loss, 2% duplication, 2% reordering) under replicated writes",
    nodes=3, duration=15.0, min_nodes=2,
    net=LinkConfig(latency=0.005, jitter=0.004, loss=0.02, duplicate=0.02, reorder=0.02), app=_app(),
)
def _flaky(cluster: SimCluster, duration: float) -> None:
    pass


@scenario(
    "clock-skew",
    "3 nodes with skewed clocks (+0.5 s, 0, -0.3 s); at 6 s n2's clock jumps back 2 s, at 9 s n2 crashes "
    "and restarts 1.5 s later: stamps still order writes and replicas converge",
    nodes=3, duration=16.0, app=_app(), min_nodes=3, min_duration=QUIESCE + 8.0,
)
def _skew(cluster: SimCluster, duration: float) -> None:
    a, b, c = cluster.node_ids[:3]
    cluster.set_skew(a, 0.5)
    cluster.set_skew(c, -0.3)
    jump = _at(duration, 6.0, room=5.0)
    cluster.schedule(jump, "jump_clock", b, -2.0)
    cluster.schedule(jump + 3.0, "crash", b)
    cluster.schedule(jump + 4.5, "restart", b)


@scenario(
    "revocation-under-partition",
    "3 nodes; {n1} | {n2, n3} at 4 s; at 5 s an admin on n2 revokes the key of client c1 (on n1), and c2 "
    "logs out at 6 s; heal at 8 s: c1's session on n1 ends within 1 s and it gets nothing more",
    nodes=3, duration=14.0, app=_app(), min_nodes=2, min_duration=QUIESCE + 6.0,
)
def _revocation(cluster: SimCluster, duration: float) -> None:
    app = app_of(cluster)
    ids = cluster.node_ids
    cut = _at(duration, 4.0, room=4.0)
    cluster.schedule(cut, "partition", [ids[0]])
    app.revoke("c1", via=ids[1], at=cut + 1.0)
    app.client("c2").logout_at(cut + 2.0)
    cluster.schedule(cut + 4.0, "heal")


@scenario(
    "drain",
    "3 nodes under replicated writes; at 4 s an admin on n2 drains n1: its clients are told to move "
    "(ClientMigration), resume elsewhere, n1 leaves and the others hold its services",
    nodes=3, duration=14.0, app=_app(), min_nodes=2, min_duration=QUIESCE + 6.0,
)
def _drain(cluster: SimCluster, duration: float) -> None:
    ids = cluster.node_ids
    app_of(cluster).drain(ids[0], via=ids[1], at=_at(duration, 4.0, room=5.0))


@scenario(
    "cluster-chaos",
    "random crashes, restarts, pauses, partitions and clock jumps (disks kept) under replicated writes, "
    "1% loss/dup/reorder; all nodes back before the quiesce",
    nodes=5, duration=30.0, min_nodes=3, app=_app(),
    net=LinkConfig(latency=0.002, jitter=0.001, loss=0.01, duplicate=0.01, reorder=0.01),
)
def _chaos(cluster: SimCluster, duration: float) -> None:
    from sim.chaos import plan_chaos

    plan_chaos(cluster, until=duration - QUIESCE)
