"""`commy sim` as a user runs it: the output contract, replayability, and clear errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

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


def test_sim_run_prints_detection_percentiles_and_false_downs(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(capsys, "sim", "run", "heartbeat-crash", "--seed", "7")
    lines = out.splitlines()
    assert rc == 0
    stats = next(i for i, line in enumerate(lines) if line.startswith("detection: "))
    found = re.fullmatch(r"detection: 2 detections, p50 (\S+)s, p90 (\S+)s, p99 (\S+)s, max (\S+)s", lines[stats])
    assert found and 0 < float(found[1]) <= float(found[2]) <= float(found[3]) <= float(found[4]) <= 2.0
    assert lines[stats + 1] == "false-down: 0" and lines[stats + 2].startswith("delivered: ")
    assert "end: 2 of 3 nodes running" in lines[stats - 1]  # right after the timeline


# --------------------------------------------------------------------------- commy sim sweep

SUMMARY = [
    r"sweep: heartbeat-crash, seeds 1\.\.3,7: 4 runs, 3 nodes, 10 simulated s each",
    r"runs with violations: 0",
    r"violations by checker: none",
    r"detection: 8 detections, p50 \d\.\d{3}s, p90 \d\.\d{3}s, p99 \d\.\d{3}s, max \d\.\d{3}s",
    r"false-down: 0",
    r"delivered: \d+ messages",
    r"sweep-hash: [0-9a-f]{64}",
    r"wall time: \d+\.\d\d s with 1 worker \(\d+\.\d runs/s\)",
    r"simulated/real: [\d,]+x \(40 simulated s\)",
]


def without_wall_time(out: str) -> list[str]:
    return [line for line in out.splitlines() if not line.startswith(("wall time:", "simulated/real:"))]


def test_sim_sweep_prints_a_summary_and_progress(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, "sim", "sweep", "heartbeat-crash", "--seeds", "7,1..3")
    assert rc == 0
    lines = out.splitlines()
    assert len(lines) == len(SUMMARY)
    for pattern, line in zip(SUMMARY, lines, strict=True):
        assert re.fullmatch(pattern, line), (pattern, line)
    assert "sweep heartbeat-crash: 4/4  100%" in err  # not a TTY: plain progress lines


@pytest.mark.parametrize(("spec", "message"), [
    ("1..0", "empty seed range '1..0'"),
    ("a..b", "not a seed or a range"),
    ("3,,4", "empty item"),
])
def test_sim_sweep_bad_seed_specs_are_clear_errors(capsys: pytest.CaptureFixture[str], spec: str,
                                                   message: str) -> None:
    rc, out, err = run_cli(capsys, "sim", "sweep", "heartbeat-crash", "--seeds", spec)
    assert rc == 2 and out == "" and err.startswith("commy sim sweep: error: --seeds: ") and message in err


@pytest.mark.parametrize(("args", "message"), [
    (("no-such-scenario",), "unknown scenario"),
    (("heartbeat-crash", "--nodes", "1"), "at least 2 nodes"),
    (("heartbeat-crash", "--duration", "2"), "duration of at least"),
    (("heartbeat-crash", "--workers", "-1"), "workers"),
])
def test_sim_sweep_bad_arguments_are_clear_errors(capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                                                  message: str) -> None:
    rc, out, err = run_cli(capsys, "sim", "sweep", *args, "--seeds", "1..2")
    assert rc == 2 and out == "" and message in err and "Traceback" not in err


def test_sim_sweep_exits_1_and_lists_replays_on_a_violation(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import sim.scenarios as scenarios
    from sim.network import LinkConfig

    broken = scenarios.Scenario("lossy-on-purpose", "lossy", lambda c, d: None, 3, 10.0, LinkConfig(loss=0.5), 2, 6.0)
    monkeypatch.setitem(scenarios._REGISTRY, broken.name, broken)
    report = tmp_path / "sweep.json"
    rc, out, _ = run_cli(capsys, "sim", "sweep", broken.name, "--seeds", "1..4", "--json", str(report))
    assert rc == 1
    assert re.search(r"^runs with violations: [1-4]$", out, flags=re.M)
    assert re.search(r"^  seed 1: no-false-down: .+\n    replay: commy sim run lossy-on-purpose --seed 1 "
                     r"--nodes 3 --duration 10$", out, flags=re.M)
    assert re.search(r"^  no-false-down: \d+ in [1-4] runs?$", out, flags=re.M)
    data = json.loads(report.read_text())
    assert data["runs"] == 4 and data["failed"][0]["seed"] == 1 and data["false_down"] >= 1

    rc, out, _ = run_cli(capsys, "sim", "sweep", broken.name, "--seeds", "1..4", "--fail-fast")
    assert rc == 1 and "1 of 4 runs (stopped at the first violation)" in out


def test_sim_sweep_json_and_clean_exit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    report = tmp_path / "sweep.json"
    rc, out, _ = run_cli(capsys, "sim", "sweep", "heartbeat-crash", "--seeds", "1..2", "--json", str(report))
    data = json.loads(report.read_text())
    assert rc == 0 and data["runs"] == 2 and data["runs_with_violations"] == 0 and data["failed"] == []
    assert data["detection"]["count"] == 4 and f"sweep-hash: {data['sweep_hash']}" in out


def test_sim_sweep_with_two_workers_gives_the_same_summary(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("sim", "sweep", "heartbeat-crash", "--seeds", "1..6,40")
    rc1, one, _ = run_cli(capsys, *args)
    rc2, two, _ = run_cli(capsys, *args, "--workers", "2")
    assert rc1 == rc2 == 0
    assert without_wall_time(one) == without_wall_time(two)
    assert "with 2 workers" in two
