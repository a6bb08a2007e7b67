"""`commy demo` as a user runs it: a subprocess whose output goes to a file (not a pipe a node
could inherit), which must exit 0, say what happened -- the kill, the detection by each survivor,
the client's failover, convergence -- and leave none of the processes it started running."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cluster_procs import ProcessGuard, pid_alive, process_guard  # noqa: F401

pytestmark = pytest.mark.integration


def demo(tmp_path: Path, *args: str, timeout: float = 60.0) -> tuple[int, str]:
    out = tmp_path / "demo.out"
    env = dict(os.environ, TMPDIR=str(tmp_path))  # its temporary folder lands here, where we can look
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "commy.cli", "demo", *args], stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = -9
    return rc, out.read_text(encoding="utf-8", errors="replace")


def test_demo_kills_a_node_and_shows_the_failover(tmp_path: Path, process_guard: ProcessGuard) -> None:  # noqa: F811
    rc, text = demo(tmp_path)
    pids = {node: int(pid) for node, pid in re.findall(r"^  (n\d)  pid (\d+) ", text, re.M)}
    for node, pid in pids.items():
        process_guard.watch(pid, f"demo node {node}")
    assert rc == 0, text
    assert sorted(pids) == ["n1", "n2", "n3"], text
    for line in (rf"killing n3 \(pid {pids['n3']}\) with SIGKILL",
                 r"detection: n1 .*declared n3 down after \d+\.\d\d s",
                 r"detection: n2 .*declared n3 down after \d+\.\d\d s",
                 r"failover: c3 lost n3, reconnected to n[12] after \d+\.\d\d s; first acknowledged write",
                 r"convergence: n1, n2 hold the same \d+ variables .* every acknowledged write is there",
                 r"no process left behind \(3 started", r"demo: ok"):
        assert re.search(line, text, re.M), f"no line like {line!r} in:\n{text}"
    assert not [pid for pid in pids.values() if pid_alive(pid)], text
    assert not list(tmp_path.glob("commy-demo-*")), "the temporary folder is removed"


@pytest.mark.parametrize("args", [["--nodes", "2"], ["--dir", "."]])
def test_demo_refuses_bad_options(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "something").write_text("not empty")
    args = [str(tmp_path) if a == "." else a for a in args]
    rc, text = demo(tmp_path, *args, timeout=20.0)
    assert rc == 2 and "commy demo: error: --" in text, text
