"""`commy sim` as a user runs it: the output contract, replayability, and clear errors."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from commy.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_sim_list_names_the_required_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(capsys, "sim", "list")
    assert rc == 0
    for name in ("heartbeat-steady", "heartbeat-crash", "heartbeat-partition"):
        assert re.search(rf"^{name}\s+\S", out, flags=re.M)


def test_sim_run_ends_with_invariants_and_hash(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(capsys, "sim", "run", "heartbeat-crash", "--seed", "7")
    lines = out.strip().splitlines()
    assert rc == 0
    assert lines[-2] == "invariants: ok"
    assert re.fullmatch(r"trace-hash: [0-9a-f]{64}", lines[-1])
    assert any("sees n3 DOWN" in line for line in lines)


def test_sim_run_is_replayable_across_processes() -> None:
    cmd = [sys.executable, "-m", "commy.cli", "sim", "run", "heartbeat-crash", "--seed", "7"]
    hashes = {subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()[-1]
              for _ in range(2)}
    assert len(hashes) == 1


@pytest.mark.parametrize(("args", "message"), [
    (("sim", "run", "no-such-scenario"), "unknown scenario"),
    (("sim", "run", "heartbeat-crash", "--nodes", "1"), "at least 2 nodes"),
])
def test_sim_run_bad_arguments_are_clear_errors(capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                                                message: str) -> None:
    rc, _, err = run_cli(capsys, *args)
    assert rc == 2 and message in err and "Traceback" not in err
