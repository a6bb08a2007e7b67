"""A cluster of `commy serve` processes on this machine's loopback, for `commy demo` and the tests.

`LocalCluster(folder, nodes=3)` writes, into `folder`, a secret file (mode 0600, random) and a
`cluster.toml` whose nodes listen on free loopback ports (found by binding port 0) with their
data in `folder/data/ID`. `start()` launches one `python -m commy.cli serve --config F --node ID`
per node -- all at once, since most of a start is importing Python -- with stdout and stderr going to
`folder/ID.log` (a file, never a pipe: a pipe nobody drains would block the node), then waits for
each node's URL line and reads the admin key printed after it on a first start.

Each node's JSON log lines are read back from its file (`NodeProcess.records`, `peer_states`), so
a caller can see when a survivor declared a killed peer down, on the node's own wall clock (the
records' `t`, `time.time()` here too). Processes are signalled by PID only. `close()` (also on
leaving a `with` block) SIGTERMs what is still running, SIGKILLs what has not exited within the
grace period, reaps everything and returns the nodes that had to be killed, so a caller can tell a
clean stop from a forced one. On Linux each node also dies with the thread that started it
(PR_SET_PDEATHSIG), in case the caller is itself killed before it can clean up.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["LocalCluster", "NodeProcess", "StartError", "free_ports", "pid_alive", "write_cluster_files"]

HOST = "127.0.0.1"
POLL = 0.02


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # PR_SET_PDEATHSIG (1): the kernel SIGKILLs the node when the thread that started it ends, so
    # a demo or test killed outright does not leave its cluster running.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)


class StartError(RuntimeError):
    """A node exited or printed no URL in time; the message holds the end of its log."""


def free_ports(n: int, host: str = HOST) -> list[int]:
    """`n` distinct ports nobody listens on right now (bound to port 0 together, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def write_cluster_files(folder: Path, ids: Sequence[str], *, replication_factor: int = 2,
                        write_concern: str = "replicated", heartbeat_interval: float | None = None,
                        name: str = "local", hosts: dict[str, list[str]] | None = None) -> Path:
    """Write `folder/secret` (0600) and `folder/cluster.toml` for nodes `ids` on free loopback
    ports; return the configuration's path. `hosts` (host name -> its node ids, the leader first)
    adds `[[hosts]]` on free admin ports, for `commy launch`."""
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder / "secret"
    secret.unlink(missing_ok=True)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    ports = free_ports(2 * len(ids) + len(hosts or {}))  # one call: no port handed out twice
    lines = ["[cluster]", f'name = "{name}"', 'secret_file = "secret"',
             f"replication_factor = {replication_factor}", f'write_concern = "{write_concern}"', ""]
    if heartbeat_interval is not None:
        lines += ["[heartbeat]", f"interval = {heartbeat_interval}", ""]
    host_of = {node: host for host, nodes in (hosts or {}).items() for node in nodes}
    for host, admin_port in zip(hosts or {}, ports[2 * len(ids):], strict=True):
        lines += ["[[hosts]]", f'name = "{host}"', f'address = "{HOST}"', f"admin_port = {admin_port}", ""]
    for i, node in enumerate(ids):
        lines += ["[[nodes]]", f'id = "{node}"', f"index = {i + 1}", f'peer = "{HOST}:{ports[2 * i]}"',
                  f'listen = "{HOST}:{ports[2 * i + 1]}"', f'data = "data/{node}"', ""]
        if node in host_of:
            lines.insert(-1, f'host = "{host_of[node]}"')
    config = folder / "cluster.toml"
    config.write_text("\n".join(lines), encoding="utf-8")
    return config


@dataclass
class NodeProcess:
    """One `commy serve` child: its process, its log file, and what it printed at start."""

    node_id: str
    proc: subprocess.Popen[bytes]
    log: Path
    out: IO[bytes] = field(repr=False)
    url: str = ""
    admin_key: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send `sig` to this process by PID (nothing if it has exited and been reaped)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (the URL line, a line still being written and tracebacks skipped)."""
        out = []
        for line in self.text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return out

    def peer_states(self, peer: str) -> list[tuple[float, str]]:
        """(wall time, new state) of each `peer_state` change this node logged about `peer`."""
        return [(float(r["t"]), str(r["new"])) for r in self.records()
                if r.get("event") == "peer_state" and r.get("peer") == peer]

    def state_of(self, peer: str) -> str | None:
        states = self.peer_states(peer)
        return states[-1][1] if states else None

    def wait_start(self, deadline: float) -> None:
        """Wait for the URL line (and the admin key line printed with it on a first start)."""
        while True:
            lines = self.text().splitlines()
            urls = [s for s in lines if s.startswith(("ws://", "wss://"))]
            if urls:
                self.url = urls[0].strip()
                keys = [s for s in lines if s.startswith("admin key: ")]
                self.admin_key = keys[0].removeprefix("admin key: ").strip() if keys else ""
                return
            if self.proc.poll() is not None:
                raise StartError(f"{self.node_id} exited with {self.proc.returncode}:\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise StartError(f"{self.node_id} printed no URL in time:\n{self.text()[-3000:]}")
            time.sleep(POLL)


class LocalCluster:
    """`nodes` `commy serve` processes (ids n1..nN) sharing one configuration in `folder`."""

    def __init__(self, folder: Path, nodes: int = 3, *, replication_factor: int = 2,
                 write_concern: str = "replicated", heartbeat_interval: float | None = None) -> None:
        self.folder = Path(folder)
        self.ids = [f"n{i}" for i in range(1, nodes + 1)]
        self.config = write_cluster_files(self.folder, self.ids, replication_factor=replication_factor,
                                          write_concern=write_concern, heartbeat_interval=heartbeat_interval)
        self.nodes: dict[str, NodeProcess] = {}
        self.started: list[NodeProcess] = []  # every process ever launched, restarts included

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def launch(self, node_id: str) -> NodeProcess:
        """Start node `node_id` without waiting for it (see `NodeProcess.wait_start`)."""
        lives = sum(1 for n in self.started if n.node_id == node_id)
        log = self.folder / (f"{node_id}.log" if not lives else f"{node_id}.{lives + 1}.log")  # one per life
        out = open(log, "wb")  # closed by close()
        proc = subprocess.Popen(
            [sys.executable, "-m", "commy.cli", "serve", "--config", str(self.config), "--node", node_id],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.folder,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        node = self.nodes[node_id] = NodeProcess(node_id, proc, log, out)
        self.started.append(node)
        return node

    def start(self, ids: Sequence[str] | None = None, timeout: float = 30.0) -> None:
        """Start the nodes (all by default) together and wait until each printed its URL."""
        launched = [self.launch(n) for n in (ids or self.ids)]
        deadline = time.monotonic() + timeout
        for node in launched:
            node.wait_start(deadline)

    @property
    def urls(self) -> list[str]:
        return [self.nodes[n].url for n in self.ids if n in self.nodes]

    @property
    def admin_key(self) -> str:
        """An admin key (each node makes its own on a first start; the catalog shares them)."""
        return next((n.admin_key for n in self.nodes.values() if n.admin_key), "")

    def wait_until(self, check: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL)
        return True

    def all_healthy(self, ids: Sequence[str] | None = None) -> bool:
        """Whether each of `ids` (default: all) last logged every other one of them healthy."""
        group = list(ids or self.ids)
        return all(self.nodes[a].state_of(b) == "healthy" for a in group for b in group if a != b)

    def alive(self) -> list[NodeProcess]:
        """Launched processes still running."""
        return [n for n in self.started if n.alive()]

    def stop(self, node_id: str, grace: float = 10.0) -> int | None:
        """SIGTERM one node and wait; its exit code, or None if it had to be killed."""
        node = self.nodes[node_id]
        node.signal(signal.SIGTERM)
        try:
            return node.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            node.signal(signal.SIGKILL)
            node.proc.wait()
            return None

    def close(self, grace: float = 10.0) -> list[str]:
        """Stop everything still running (SIGTERM, then SIGKILL after `grace` s) and reap it all;
        return the ids of the nodes that had to be killed."""
        for node in self.alive():
            node.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        forced = []
        for node in self.started:
            try:
                node.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                forced.append(node.node_id)
                node.signal(signal.SIGKILL)
                node.proc.wait()
            node.out.close()
        return forced
