"""Real `commy serve` processes for integration tests, and a guard that none outlives its test.

The processes themselves are `commy.runtime.local_cluster.LocalCluster`'s (the same code `commy
demo` runs): N nodes from one generated configuration in the test's tmp_path (free loopback ports,
a 0600 secret file, data folders), output to files, URL and admin key read back, signals by PID.

The `process_guard` fixture hands out clusters (`guard.cluster(3)`) and watches other PIDs a test
learns of (`guard.watch(pid, what)`, e.g. the nodes a `commy demo` subprocess started). A test is
expected to stop what it started; at teardown the guard SIGKILLs whatever still runs and fails the
test naming it, so a leaked daemon is a failure rather than a slow machine.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from commy.runtime.local_cluster import LocalCluster, NodeProcess, free_ports, pid_alive

__all__ = ["LocalCluster", "NodeProcess", "ProcessGuard", "free_ports", "pid_alive", "process_guard", "wait_for"]


def wait_for(check: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll `check` until it holds or `timeout` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


class ProcessGuard:
    """Every cluster and PID a test started, and a final check that none still runs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.clusters: list[LocalCluster] = []
        self.pids: dict[int, str] = {}

    def cluster(self, nodes: int = 3, *, replication_factor: int = 2, write_concern: str = "replicated",
                heartbeat_interval: float | None = None) -> LocalCluster:
        """A new (not yet started) cluster in its own sub-folder of the test's tmp_path."""
        folder = self.folder / f"cluster{len(self.clusters) + 1}"
        cluster = LocalCluster(folder, nodes, replication_factor=replication_factor, write_concern=write_concern,
                               heartbeat_interval=heartbeat_interval)
        self.clusters.append(cluster)
        return cluster

    def watch(self, pid: int, what: str) -> None:
        """Also check PID `pid` (not our child) at the end."""
        self.pids[pid] = what

    def leftovers(self) -> list[str]:
        left = [f"{n.node_id} (pid {n.pid})" for c in self.clusters for n in c.alive()]
        return left + [f"{what} (pid {pid})" for pid, what in self.pids.items() if pid_alive(pid)]

    def cleanup(self) -> list[str]:
        """Kill and reap everything; return what was still running."""
        left = self.leftovers()
        for cluster in self.clusters:
            for node in cluster.alive():
                node.signal(signal.SIGKILL)
            cluster.close()
        for pid in self.pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        return left


@pytest.fixture
def process_guard(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ProcessGuard]:
    guard = ProcessGuard(tmp_path)
    failed_before = request.session.testsfailed
    yield guard
    left = guard.cleanup()
    # A test that failed already left its processes behind on the way out: that is not news.
    if left and request.session.testsfailed == failed_before:
        pytest.fail("still running at the end of the test (killed now): " + ", ".join(left))
