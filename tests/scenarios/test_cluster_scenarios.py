"""The cluster scenarios (full nodes with clients) hold their invariants, replay exactly, and
their checkers catch what they are there to catch (each is shown a deliberately broken run)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from commy.errors import UNAVAILABLE
from commy.messages import Address, CloseClient, NamedValue, SetVariables, VariableChanged
from sim.app import AppConfig, SimApp
from sim.clients import ClientSpec, SimClient
from sim.cluster import SimCluster
from sim.scenarios import QUIESCE, ScenarioResult, list_scenarios, run_scenario

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = [name for name, _ in list_scenarios() if not name.startswith("heartbeat")]


def explain(result: ScenarioResult) -> str:
    return f"seed {result.seed}: replay with `{result.replay_command}`\n" + "\n".join(result.violations[:20])


@pytest.mark.parametrize("name", CLUSTER)
def test_no_violations_and_same_seed_same_trace(name: str) -> None:
    first = run_scenario(name, seed=1)
    assert first.ok, explain(first)
    again = run_scenario(name, seed=1)
    assert again.trace_hash == first.trace_hash, f"nondeterministic: replay with `{first.replay_command}`"
    assert again.timeline == first.timeline
    other = run_scenario(name, seed=2)
    assert other.ok, explain(other)
    assert other.trace_hash != first.trace_hash


# --------------------------------------------------------------------------- bugs found, minimal reproductions
# Fixed ones stay as regression tests; an open one is a strict xfail (it fails the day it is fixed: drop the mark).


def run_app(config: AppConfig, plan: Callable[[SimCluster, SimApp], None], *, nodes: int = 3, seed: int = 1,
            duration: float = 12.0) -> list[str]:
    """A cluster application run outside the registry: `plan` schedules faults and extra clients."""
    ids = [f"n{i}" for i in range(1, nodes + 1)]
    app = SimApp(ids, seed, config)
    cluster = SimCluster(seed, ids, app.build, checkers=app.checkers)
    app.start(cluster, duration)
    plan(cluster, app)
    cluster.run_until(duration - QUIESCE)
    cluster.heal_and_quiesce(QUIESCE)
    return cluster.violations


def test_a_writer_refused_for_a_long_partition_is_not_dropped() -> None:
    def plan(cluster: SimCluster, app: SimApp) -> None:
        cluster.schedule(1.0, "partition", ["n1"])  # c1 writes on n1, alone: every replicated write is refused
        cluster.schedule(14.0, "heal")

    violations = run_app(AppConfig(intruders=False, tenants=("acme",)), plan, duration=18.0)
    assert not violations, violations


def test_resume_alone_restores_the_subscriptions() -> None:
    def plan(cluster: SimCluster, app: SimApp) -> None:
        cluster.schedule(4.0, "crash", "n1")

    violations = run_app(AppConfig(resubscribe=False), plan)  # every value after the resume comes as an event
    assert not violations, violations


def test_writes_after_a_disk_loss_with_the_clock_behind_are_kept() -> None:
    # Fixed: a node back from a lost disk with its clock behind stamped new writes below its old
    # incarnation's; peers dropped them as duplicates, yet they were acknowledged. Now the node
    # refuses writes until its peers' digests brought its clock past everything they saw of it.
    late: list[SimClient] = []

    def plan(cluster: SimCluster, app: SimApp) -> None:
        cred = app.credentials["acme-w1"]

        def client(name: str, node: str, start: float) -> SimClient:
            return app.add_client(ClientSpec(name, cred.client_id, cred.key, "acme", "telemetry", (node,),
                                             subscribe=("x",), start_at=start))

        def write(who: SimClient, value: bytes) -> None:
            who.send(SetVariables("acme", "telemetry", (NamedValue("x", value),), "replicated"))

        early = client("early", "n1", 0.5)
        late.append(client("late", "n2", 4.0))
        app.at(1.0, write, early, b"early")  # x's stamp: t = 1 s
        cluster.schedule(2.5, "jump_clock", "n2", -2.0)  # n2 keeps stamping ~2.5 s (its HLC never goes back)...
        app.at(3.0, app.crash_losing_disk, "n2")  # ... then forgets it all
        cluster.schedule(4.0, "restart", "n2")
        app.at(4.05, write, late[0], b"late")  # n2's wall clock reads ~2.05 s: below its old stamps

        def retry() -> None:  # as a client does with `unavailable`
            if late[0].errors:
                write(late[0], b"late")

        app.at(4.6, retry)

    violations = run_app(AppConfig(writers=2, readers=0, tenants=("acme",), intruders=False), plan)
    assert not violations, violations  # acked-writes-kept: the acknowledged late write is on every holder
    [refused] = late[0].errors  # it came while n2 caught up: refused, nothing written
    assert refused[2] == UNAVAILABLE and "catching up with its peers: retry" in refused[3]
    assert [a.value for a in late[0].acked] == [b"late"]  # the retry


def test_hash_does_not_depend_on_the_interpreter_hash_seed() -> None:
    expected = run_scenario("cluster-chaos", seed=3, duration=12.0).trace_hash
    code = ("from sim.scenarios import run_scenario; "
            "print(run_scenario('cluster-chaos', seed=3, duration=12).trace_hash)")
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                             check=True, timeout=120)
        assert out.stdout.strip() == expected, f"PYTHONHASHSEED={hash_seed} changed the trace"


def test_failover_resumes_every_client_of_the_dead_node_and_reports_the_times() -> None:
    result = run_scenario("failover", seed=3)
    assert result.ok, explain(result)
    assert len(result.failover_times) == 2  # n1 had two clients
    assert all(0 < t < 1.0 for t in result.failover_times)
    assert result.metrics["write_latency"] and "replication_lag" in result.metrics
    assert any("resumed on" in line for line in result.timeline)


def test_revocation_is_enforced_after_the_heal() -> None:
    seen: list[SimCluster] = []
    result = run_scenario("revocation-under-partition", seed=4, on_cluster=seen.append)
    assert result.ok, explain(result)
    app = seen[0].app
    assert isinstance(app, SimApp)
    victim, leaver = app.client("c1"), app.client("c2")
    heal = 8.0
    assert victim.phase == "revoked" and victim.revoked_at is not None and heal < victim.revoked_at < heal + 1.0
    assert leaver.phase == "logged_out"


def test_a_drain_moves_every_client_off_the_node_which_then_leaves() -> None:
    seen: list[SimCluster] = []
    result = run_scenario("drain", seed=2, on_cluster=seen.append)
    assert result.ok, explain(result)
    app = seen[0].app
    assert isinstance(app, SimApp) and app.retired == {"n1"}
    moved = [c for c in app.clients if c.failovers]
    assert moved and all(f.from_node == "n1" and f.to_node != "n1" for c in moved for f in c.failovers)
    assert len(result.failover_times) == len(moved) and max(result.failover_times) < 0.5
    assert "n2 sees n1 LEFT" in result.timeline[-1]


# --------------------------------------------------------------------------- the checkers catch bugs


def broken(name: str, seed: int, sabotage: Callable[[SimCluster, SimApp], None], at: float) -> list[str]:
    """Run `name`, calling `sabotage(cluster, app)` at `at` seconds; the violations."""

    def hook(cluster: SimCluster) -> None:
        cluster.sched.at(cluster.sched.epoch + at, lambda _: sabotage(cluster, cluster.app))

    return run_scenario(name, seed=seed, on_cluster=hook).violations


def kinds(violations: list[str]) -> set[str]:
    return {v.split(":", 1)[0] for v in violations}


def test_a_lost_acknowledged_write_is_caught() -> None:
    def forget(cluster: SimCluster, app: SimApp) -> None:  # a holder "loses" v0: an older stamp wins
        handle = app.disks["n2"].store.open("acme", "telemetry")
        handle.write("v0", b"c1:0", stamp=1)

    found = kinds(broken("failover", 1, forget, at=13.9))
    assert {"acked-writes-kept", "replicas-converge", "sessions-resume"} <= found


def test_a_diverged_version_vector_is_caught() -> None:
    def skew_clock(cluster: SimCluster, app: SimApp) -> None:
        app.disks["n3"].store.open("globex", "telemetry").set_clock(200, 12345)

    assert kinds(broken("flaky-network", 1, skew_clock, at=14.9)) == {"replicas-converge"}


def test_data_of_another_tenant_is_caught() -> None:
    def leak(cluster: SimCluster, app: SimApp) -> None:
        client = app.client("c1")  # acme
        assert client.conn is not None
        node = cluster.node(client.node)
        node.send(Address(node.node_id, "clients"), client.conn.address,
                  VariableChanged("globex", "telemetry", "v0", b"secret", 1, "globex-w1", 1 << 40), None)

    found = broken("cluster-load", 1, leak, at=3.0)
    assert kinds(found) == {"tenant-isolation"} and "of tenant 'globex'" in found[0]


def test_a_stamp_going_backwards_on_a_connection_is_caught() -> None:
    def replay_old(cluster: SimCluster, app: SimApp) -> None:
        client = app.client("c3")
        assert client.conn is not None
        node = cluster.node(client.node)
        node.send(Address(node.node_id, "clients"), client.conn.address,
                  VariableChanged("acme", "telemetry", "v1", b"old", 1, "acme-w1", 1), None)

    found = broken("cluster-load", 1, replay_old, at=3.0)
    assert any("sessions-resume" in v and "same connection" in v for v in found)


def test_a_revocation_that_is_never_enforced_is_caught() -> None:
    def deaf(cluster: SimCluster, app: SimApp) -> None:  # n1 stops merging catalogs from its peers
        hub = cluster.node("n1").actors["clients"]
        hub.catalog.merge_snapshot = lambda *a, **k: False  # type: ignore[attr-defined]

    found = broken("revocation-under-partition", 1, deaf, at=1.0)
    assert "revoked-gets-nothing" in kinds(found)
    assert any("after its deadline" in v for v in found) and any("still holds a session" in v for v in found)


def test_a_client_dropped_for_nothing_is_caught() -> None:
    def drop(cluster: SimCluster, app: SimApp) -> None:
        client = app.client("c2")
        assert client.conn is not None
        node = cluster.node(client.node)
        node.send(Address(node.node_id, "clients"), client.conn.address, CloseClient("internal", "oops"), None)

    found = broken("cluster-load", 1, drop, at=3.0)
    assert any("sessions-resume" in v and "dropped" in v for v in found)

