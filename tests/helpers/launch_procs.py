"""The processes of a `commy launch`: found through /proc, checked gone at the end of a test.

Thespian's admin daemonizes into a session of its own, and every actor process it forks (the
director, the node actors) stays in that session. So the processes of a host's actor system are
the session of whichever process listens on its admin port (`system_pids`), and "nothing left
behind" means none of those PIDs runs any more (a zombie waiting for its reaper has ended).
`LaunchGuard` (fixture `launch_guard`) remembers every PID a test saw; at teardown it runs `commy
stop`, SIGKILLs what still runs and fails the test naming it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cluster_procs import wait_for


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def _listening() -> dict[str, tuple[str, int]]:
    """inode -> (IPv4 address, port) of every listening TCP socket (IPv6 ones as "v6")."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":
                continue
            host, port = fields[1].rsplit(":", 1)
            ip = ".".join(str(int(host[i:i + 2], 16)) for i in (6, 4, 2, 0)) if len(host) == 8 else "v6"
            out[fields[9]] = (ip, int(port, 16))
    return out


def listening_addresses(pids: set[int]) -> set[tuple[str, int]]:
    """The (address, port) every listening socket held by `pids` is bound to."""
    table = _listening()
    found = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in table:
                found.add(table[link[8:-1]])
    return found


def listening_pids(port: int) -> set[int]:
    inodes = {f"socket:[{i}]" for i in _listening_inodes(port)}
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                pids.add(int(entry.name))
        except OSError:
            continue
    return pids


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def system_pids(admin_port: int) -> set[int]:
    """Every running process of the actor system whose admin listens on `admin_port`."""
    sessions = {s[3] for p in listening_pids(admin_port) if (s := _stat(p)) is not None}
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (s := _stat(int(entry.name))) is not None and s[3] in sessions and s[0] != "Z":
            out.add(int(entry.name))
    return out


def commy(*args: str, timeout: float = 120.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `commy` command with captured output (launch must not hang a capturing caller)."""
    return subprocess.run([sys.executable, "-m", "commy.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


class LaunchGuard:
    def __init__(self) -> None:
        self.config: Path | None = None
        self.admin_ports: list[int] = []
        self.pids: dict[int, str] = {}
        self.env: dict[str, str] | None = None

    def watch_systems(self) -> None:
        for port in self.admin_ports:
            for pid in system_pids(port):
                self.pids.setdefault(pid, f"actor system process (admin port {port})")

    def leftovers(self) -> list[str]:
        self.watch_systems()
        return [f"{what} (pid {pid})" for pid, what in sorted(self.pids.items()) if running(pid)]

    def finish(self) -> list[str]:
        """Stop whatever a failed test left; the names of what had to be killed."""
        if self.config is not None and self.leftovers():
            commy("stop", str(self.config), timeout=60, env=self.env)
        left = [] if wait_for(lambda: not self.leftovers(), 10.0, step=0.1) else self.leftovers()
        for pid in self.pids:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        return left


@pytest.fixture
def launch_guard() -> Iterator[LaunchGuard]:
    guard = LaunchGuard()
    yield guard
    left = guard.finish()
    assert not left, f"processes left behind: {left}"
