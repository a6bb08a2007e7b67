"""Three `commy node` OS processes on loopback: they find each other, and a kill -9 is noticed.

Each node's stdout goes to a file (never a pipe: a pipe nobody drains can block a child). The
three share the cluster secret (n1 reads it from `--secret-file`, the others from the environment);
a fourth process, `x`, dials all three with another secret and must never get a link. The test
waits, bounded, until every node logs its two peers `healthy`, SIGKILLs one by PID, waits until
both survivors log it `down`, then SIGTERMs the survivors and checks they exit cleanly. Whatever
happens, every process started here is killed by its PID before the test returns.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

IDS = ["n1", "n2", "n3"]
SECRET = "three processes' cluster secret"
INTERVAL = 0.1  # heartbeat interval: DOWN after 5 misses, about 0.5 s after the kill


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def records(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line still being written
    return out


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def last_state(path: Path, peer: str) -> str | None:
    states = [r["new"] for r in records(path) if r.get("event") == "peer_state" and r.get("peer") == peer]
    return str(states[-1]) if states else None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[dict[str, subprocess.Popen[bytes]], dict[str, Path]]]:
    ports = dict(zip([*IDS, "x"], free_ports(len(IDS) + 1), strict=True))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    (tmp_path / "secret").write_text(SECRET + "\n", encoding="utf-8")
    try:
        for node in [*IDS, "x"]:
            peers = [f"--peer={p}=127.0.0.1:{ports[p]}" for p in IDS if p != node]
            env = dict(os.environ, COMMY_CLUSTER_SECRET="not the cluster's secret" if node == "x" else SECRET)
            secret_file = [f"--secret-file={tmp_path / 'secret'}"] if node == "n1" else []
            logs[node] = tmp_path / f"{node}.jsonl"
            with open(logs[node], "wb") as out, open(tmp_path / f"{node}.err", "wb") as err:
                procs[node] = subprocess.Popen(
                    [sys.executable, "-m", "commy.cli", "node", "--id", node, "--listen", f"127.0.0.1:{ports[node]}",
                     *peers, "--interval", str(INTERVAL), "--seed", str(len(procs) + 1), *secret_file],
                    stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                )
        yield procs, logs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def test_three_nodes_see_each_other_and_notice_a_kill(
    cluster: tuple[dict[str, subprocess.Popen[bytes]], dict[str, Path]],
) -> None:
    procs, logs = cluster

    def all_healthy() -> bool:
        return all(last_state(logs[n], p) == "healthy" for n in IDS for p in IDS if p != n)

    assert wait_for(lambda: all(any(r.get("event") == "ready" for r in records(logs[n])) for n in IDS), 15), \
        {n: logs[n].read_text() for n in IDS}
    assert wait_for(all_healthy, 15), {n: logs[n].read_text()[-2000:] for n in IDS}
    # The node without the secret: refused by every member, each of its dials a violation.
    assert wait_for(lambda: {r.get("peer") for r in records(logs["x"]) if r.get("event") == "link_violation"}
                    == set(IDS), 10), logs["x"].read_text()[-2000:]
    for node in IDS:
        assert not any(r.get("event") == "link_up" and r.get("peer") == "x" for r in records(logs[node]))

    procs["n3"].send_signal(signal.SIGKILL)
    procs["n3"].wait(timeout=5)
    killed_at = time.monotonic()
    assert wait_for(lambda: last_state(logs["n1"], "n3") == "down" and last_state(logs["n2"], "n3") == "down", 5)
    assert time.monotonic() - killed_at < 3.0
    assert last_state(logs["n1"], "n2") == "healthy" and last_state(logs["n2"], "n1") == "healthy"

    for node in ("n1", "n2", "x"):
        procs[node].send_signal(signal.SIGTERM)
    for node in ("n1", "n2", "x"):
        assert procs[node].wait(timeout=10) == 0
        assert any(r.get("event") == "stopped" for r in records(logs[node]))
    assert all(p.poll() is not None for p in procs.values())
