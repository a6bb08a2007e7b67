"""`commy launch` for real: two thespian actor systems (leader and member, standing for two hosts),
three nodes across them, SDK clients writing with concern `replicated`, one node process SIGKILLed
and restarted by the director, nothing acknowledged lost, and `commy stop` leaving no process.

The commands run as a user runs them (`python -m commy.cli ...`, output captured: a launch must not
hang a caller that reads its output). PIDs come from `commy status --json` (the node processes) and
from /proc (every process in each actor system's session); the `launch_guard` fixture fails the
test if any of them outlives it.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from commy.config import load_cluster_config
from commy.runtime.local_cluster import write_cluster_files
from tests.helpers.cluster_procs import wait_for
from tests.helpers.launch_procs import (  # noqa: F401
    LaunchGuard,
    commy,
    launch_guard,
    listening_addresses,
    running,
    system_pids,
)
from tests.integration.test_cluster_processes import Writer, poll, problems, read_all, set_up

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

VICTIM = "n3"  # the node on the member host


class Launched:
    """What `set_up` needs of a cluster: its URLs and an admin key."""

    def __init__(self, config: Path, status: dict[str, Any]) -> None:
        self.config = config
        self.nodes = {n["node_id"]: n for n in status["nodes"]}
        self.urls = [n["url"] for n in status["nodes"]]
        self.admin_key = (config.parent / "data" / "n1" / "admin.key").read_text().strip()


def status(config: Path) -> dict[str, Any]:
    out = commy("status", str(config), "--json", timeout=60)
    assert out.stdout, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_launch_supervise_and_stop_two_hosts(tmp_path: Path, launch_guard: LaunchGuard) -> None:  # noqa: F811
    config = write_cluster_files(tmp_path, ["n1", "n2", "n3"], replication_factor=2, write_concern="replicated",
                                 name="launched", hosts={"h1": ["n1", "n2"], "h2": ["n3"]})
    hosts = load_cluster_config(config).hosts
    launch_guard.config, launch_guard.admin_ports = config, [h.admin_port for h in hosts]

    launched = commy("launch", str(config), timeout=120)
    launch_guard.watch_systems()
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "admin key of n1's first start" in launched.stdout
    first = status(config)
    assert [(n["node_id"], n["host"], n["state"]) for n in first["nodes"]] == [
        ("n1", "h1", "ready"), ("n2", "h1", "ready"), ("n3", "h2", "ready")]
    assert first["hosts"] == [["h1", True], ["h2", True]]
    every = set().union(*(system_pids(h.admin_port) for h in hosts))
    bound = listening_addresses(every)
    assert {p for _, p in bound} >= {h.admin_port for h in hosts}  # the admins, the actors, the nodes
    assert {a for a, _ in bound} == {"127.0.0.1"}, bound  # thespian alone would listen on 0.0.0.0
    cluster = Launched(config, first)
    victim_pid = cluster.nodes[VICTIM]["pid"]
    assert victim_pid in system_pids(hosts[1].admin_port)  # the node runs in the member system's process tree
    for pid in (n["pid"] for n in first["nodes"]):
        launch_guard.pids[pid] = "node process"

    writers, restarted = asyncio.run(load_kill_and_restart(cluster, victim_pid))
    launch_guard.pids[restarted["pid"]] = "restarted node process"
    assert restarted["restarts"] == 1 and restarted["pid"] != victim_pid
    assert restarted["detail"] == "its process ended"  # thespian's exit notice, not the membership fallback

    async def every_node_has_every_acked_write() -> dict[str, list[str]]:
        views = {node: await read_all(n["url"], writers[0].key) for node, n in cluster.nodes.items()}
        pairs = zip(views, [*list(views)[1:], next(iter(views))], strict=True)  # n1-n2, n2-n3, n3-n1
        return {a: problems(writers, {a: views[a], b: views[b]}) for a, b in pairs}

    found: dict[str, list[str]] = {}

    async def converged() -> bool:
        found.update(await every_node_has_every_acked_write())
        return not any(found.values())

    assert asyncio.run(poll(converged, 15.0)), {k: v[:5] for k, v in found.items()}

    stopped = commy("stop", str(config), timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert wait_for(lambda: not launch_guard.leftovers(), 15.0, step=0.1), launch_guard.leftovers()
    assert "actor system stopped" in stopped.stdout


async def load_kill_and_restart(cluster: Launched, victim_pid: int) -> tuple[list[Writer], dict[str, Any]]:
    """Writers on every node (each with every URL), SIGKILL the victim's process under the load,
    wait for the director to report it ready again, then a little more load."""
    key = await set_up(cluster)  # type: ignore[arg-type]
    urls = cluster.urls
    writers = [Writer(f"w{i}", urls[i % 3:] + urls[:i % 3], key) for i in range(6)]
    await asyncio.gather(*(w.connect() for w in writers))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in writers]
    restarted: dict[str, Any] = {}
    try:
        assert await poll(lambda: all(len(w.acks) >= 20 for w in writers), 15.0), "the load never started"
        os.kill(victim_pid, signal.SIGKILL)
        killed_at = time.time()

        async def back() -> bool:
            node = next(n for n in (await asyncio.to_thread(status, cluster.config))["nodes"]
                        if n["node_id"] == VICTIM)
            restarted.update(node)
            return bool(node["state"] == "ready" and node["pid"] != victim_pid)

        assert await poll(back, 60.0), restarted
        print(f"launch: {VICTIM} restarted by the director {time.time() - killed_at:.2f} s after SIGKILL "
              f"(pid {victim_pid} -> {restarted['pid']})")
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in writers:
            if w.client is not None:
                await w.client.close()
    assert all(w.first_ack_after(killed_at) for w in writers), {w.name: dict(w.failures) for w in writers}
    return writers, restarted


def test_a_host_that_dies_whole_is_noticed_and_its_nodes_come_back_with_it(
        tmp_path: Path, launch_guard: LaunchGuard) -> None:  # noqa: F811
    """Thespian sends no exit notice when a host's whole actor system dies: the director learns it
    from commy's membership (and the lapsed registration), and restarts the host's node once the
    host is launched again."""
    config = write_cluster_files(tmp_path, ["n1", "n2", "n3"], name="hosts", hosts={"h1": ["n1", "n2"], "h2": ["n3"]})
    hosts = load_cluster_config(config).hosts
    launch_guard.config, launch_guard.admin_ports = config, [h.admin_port for h in hosts]
    assert commy("launch", str(config)).returncode == 0
    launch_guard.watch_systems()
    member = system_pids(hosts[1].admin_port)
    for pid in member:
        os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not any(running(p) for p in member), 5.0)

    def n3() -> dict[str, Any]:
        return next(n for n in status(config)["nodes"] if n["node_id"] == "n3")

    assert wait_for(lambda: n3()["state"] == "waiting", 60.0, step=1.0), n3()
    relaunched = commy("launch", str(config), "--host", "h2")
    launch_guard.watch_systems()
    assert relaunched.returncode == 0, relaunched.stderr
    assert wait_for(lambda: n3()["state"] == "ready", 30.0, step=1.0), n3()
    assert commy("stop", str(config)).returncode == 0
    assert wait_for(lambda: not launch_guard.leftovers(), 15.0, step=0.1), launch_guard.leftovers()


def test_nodes_stop_themselves_when_their_director_dies_and_requests_need_the_secret(
        tmp_path: Path, launch_guard: LaunchGuard) -> None:  # noqa: F811
    """A killed director supervises nothing: its nodes notice the polls stopped and close within
    `launch.orphan_timeout`, so a new launch never runs a second copy. And a command whose
    configuration holds another secret is refused by the director."""
    config = write_cluster_files(tmp_path, ["n1", "n2"], name="orphans", hosts={"h1": ["n1", "n2"]})
    config.write_text(config.read_text() + "\n[launch]\norphan_timeout = 5\n")
    (tmp_path / "secret2").write_text("f" * 64 + "\n")
    os.chmod(tmp_path / "secret2", 0o600)
    impostor = tmp_path / "impostor.toml"
    impostor.write_text(config.read_text().replace('secret_file = "secret"', 'secret_file = "secret2"'))
    hosts = load_cluster_config(config).hosts
    launch_guard.config, launch_guard.admin_ports = config, [h.admin_port for h in hosts]
    assert commy("launch", str(config)).returncode == 0
    launch_guard.watch_systems()

    refused = commy("status", str(impostor))
    assert refused.returncode == 1 and "not signed with this cluster's secret" in refused.stderr, refused.stderr

    first = status(config)
    nodes = [n["pid"] for n in first["nodes"]]
    director = first["director_pid"]
    assert director and director not in nodes and all(running(p) for p in nodes)
    os.kill(director, signal.SIGKILL)
    assert wait_for(lambda: not any(running(p) for p in nodes), 15.0, step=0.2), "the orphaned nodes kept running"
    gone = commy("status", str(config))
    assert gone.returncode == 1 and "no cluster is launched here" in gone.stderr, gone.stderr
    assert commy("stop", str(config)).returncode == 0
    assert wait_for(lambda: not launch_guard.leftovers(), 15.0, step=0.1), launch_guard.leftovers()


def test_the_readme_commands_on_the_shipped_example(tmp_path: Path, launch_guard: LaunchGuard,  # noqa: F811
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`commy launch | status | stop examples/3-node.toml` as the README shows them (the file copied
    as is, so its relative data folders land in the test's folder; its fixed ports must be free)."""
    config = tmp_path / "3-node.toml"
    shutil.copy(Path(__file__).parents[2] / "examples" / "3-node.toml", config)
    monkeypatch.setenv("COMMY_CLUSTER_SECRET", secrets.token_urlsafe(32))
    env = dict(os.environ)
    launch_guard.config, launch_guard.env = config, env
    launch_guard.admin_ports = [h.admin_port for h in load_cluster_config(config).hosts]
    launched = commy("launch", str(config), env=env)
    launch_guard.watch_systems()
    assert launched.returncode == 0, launched.stdout + launched.stderr
    shown = commy("status", str(config), env=env)
    assert shown.returncode == 0, shown.stderr
    assert [line.split()[:3] for line in shown.stdout.splitlines()[2:5]] == [
        ["n1", "local", "ready"], ["n2", "local", "ready"], ["n3", "local", "ready"]]
    stopped = commy("stop", str(config), env=env)
    assert stopped.returncode == 0 and "nodes stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert wait_for(lambda: not launch_guard.leftovers(), 15.0, step=0.1), launch_guard.leftovers()
